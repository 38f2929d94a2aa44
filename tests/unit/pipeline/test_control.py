"""Erase and un-merge commands against a partition's state, without I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.core.control import Command, Verb, encode, parse_command
from streams.core.errors import BadRecord
from streams.core.persons import Erase
from streams.core.record import ERASED_VERSION
from streams.core.rules import Policy, RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import control
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.unit.stitching import Run, event


def _command(run: Run, *commands: Command, partition: int = 1) -> list[dict[str, Any]]:
    """The commands as one partition of the control topic has them (partition 0's copy
    also erases the warehouses' rows by id)."""
    records = [
        InputRecord("control", partition, i, None, encode(c)) for i, c in enumerate(commands)
    ]
    result = control(records, run.state(), run.rules, run.counts, erasures=run.erasures)
    run.store.write(result.changes)
    run.dead += [d.reason for d in result.dead]
    emitted = [orjson.loads(r.value) for r in result.sink]
    run.records += emitted
    return emitted


def test_erase_by_anonymous_id_forgets_it_and_deletes_every_event() -> None:
    run = Run()
    run.feed(event("e1"), event("e2"), event("e3", email="a@b.com"), event("e4"))
    run.feed(event("x1", "2"))
    emitted = _command(run, Command(Verb.ERASE, anonymous_id="1"))
    assert sorted((r["event_id"], r["status"], r["version"]) for r in emitted) == [
        (e, "erased", ERASED_VERSION) for e in ("e1", "e2", "e3", "e4")
    ]
    assert all(r["event"] == {} and r["stitched_user_id"] is None for r in emitted)
    assert [k[:4] for k, _ in run.store.scan(b"") if k[:1] != b"t"] == [
        b"h\x00\x012",
        b"n\x00\x012",
        b"s\x00\x012",
    ]  # of "1" nothing but its arrival times (which expire on their own)
    assert run.counts.erased_anonymous_ids == 1
    # an event of it up to the erasure's time (a copy, a replay's) is never emitted again
    assert run.feed(event("e2"), event("e6")) == []
    assert run.counts.erased_on_arrival == 2
    # after it, the id starts afresh: a new event of it waits, with no identity
    assert [r["status"] for r in run.feed(event("e5"), at=1)] == ["anonymous"]


def test_erase_by_identity_finds_every_anonymous_id_identified_so() -> None:
    run = Run()
    run.feed(event("a1", "A"), event("a2", "A", email="p@x.com"), event("b1", "B", user_id="u"))
    run.feed(event("c1", "C"), event("c2", "C", email="p@x.com", user_id="u2"))
    emitted = _command(run, Command(Verb.ERASE, identity="p@x.com"))
    assert sorted(r["event_id"] for r in emitted if r["status"] == "erased") == [
        "a1", "a2", "c1", "c2",
    ]  # fmt: skip
    # and every row of A and C, of any age, wherever the warehouses have it
    erase = [r for r in emitted if r["status"] == "erase"]
    assert sorted(r["anonymous_id"] for r in erase) == ["A", "C"]
    assert PartitionState(run.store).identity("B") is not None
    assert _command(run, Command(Verb.ERASE, identity="nobody@x.com")) == []


def test_partition_0s_copy_of_an_erasure_deletes_the_rows_of_any_age_by_id() -> None:
    run = Run()
    for command, target in (
        (Command(Verb.ERASE, anonymous_id="gone-long-ago"), {"anonymous_id": "gone-long-ago"}),
        (Command(Verb.ERASE, identity="p@x.com"), {"identity": "p@x.com"}),
    ):
        [record] = _command(run, command, partition=0)
        assert record == {"status": "erase", **target, "version": ERASED_VERSION}
    assert _command(run, Command(Verb.UNMERGE, anonymous_id="x"), partition=0) == []


def test_erase_of_an_id_this_partition_does_not_hold_changes_nothing() -> None:
    run = Run()
    run.feed(event("e1"))
    before = list(run.store.scan(b""))
    assert _command(run, Command(Verb.ERASE, anonymous_id="elsewhere")) == []
    assert list(run.store.scan(b"")) == before


@pytest.mark.parametrize("policy", list(Policy))
def test_unmerge_emits_amended_events_as_they_arrived_and_forgets_the_identity(
    policy: Policy,
) -> None:
    run = Run(RecognitionRules(policy=policy))
    first = event("e1", page="/a")
    run.feed(first, event("e2"), event("e3", email="a@b.com"))
    emitted = _command(run, Command(Verb.UNMERGE, anonymous_id="1"))
    expected = [("e1", "unmerged", 3, "1"), ("e2", "unmerged", 3, "1")]
    if policy is Policy.LATEST:  # it keeps identified events too: back to their own identity
        expected.append(("e3", "unmerged", 2, "a@b.com"))
    shown = [(r["event_id"], r["status"], r["version"], r["stitched_user_id"]) for r in emitted]
    assert shown == expected
    assert orjson.dumps(emitted[0]["event"]) == first  # byte for byte as it arrived
    assert PartitionState(run.store).identity("1") is None
    # a later identity amends them again, above the un-merge
    amended = run.feed(event("e6", email="c@d.com"))
    again = [(r["event_id"], r["version"], r["stitched_user_id"]) for r in amended[1:]]
    later = [("e1", 4, "c@d.com"), ("e2", 4, "c@d.com")]
    if policy is Policy.LATEST:
        later.append(("e3", 3, "c@d.com"))
        assert amended[3]["event"]["user"]["email"] == "a@b.com"  # its own, as it arrived
    assert again == later


def test_unmerge_of_an_id_without_identity_emits_nothing() -> None:
    run = Run()
    run.feed(event("e1"))
    assert _command(run, Command(Verb.UNMERGE, anonymous_id="1")) == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"nope", "control record is not valid JSON"),
        (b'{"erase": {"anonymous_id": "1"}, "unmerge": {}}', "must be one command"),
        (b'{"explode": {"anonymous_id": "1"}}', "unknown command 'explode'"),
        (b'{"erase": {"anonymous_id": "1", "identity": "x"}}', "either an anonymous_id or"),
        (b'{"erase": {"anonymous_id": ""}}', "must be a non-empty string"),
        (b'{"unmerge": {"identity": "a@b.com"}}', "unmerge names an anonymous_id"),
    ],
)
def test_bad_commands_are_dead_letters_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        parse_command(raw)
    run = Run()
    result = control(
        [InputRecord("control", 0, 0, None, raw)], PartitionState(run.store), run.rules, Counters()
    )
    assert reason in result.dead[0].reason


def test_erase_by_identity_finds_an_id_by_its_current_identity_only() -> None:
    run = Run()
    run.feed(event("a1", "A", email="old@x.com"), event("a2", "A", email="new@x.com"))
    assert _command(run, Command(Verb.ERASE, identity="old@x.com")) == []  # replaced (retain)
    erased_ids = _command(run, Command(Verb.ERASE, identity="new@x.com"))
    assert sorted(r["event_id"] for r in erased_ids if r["status"] == "erased") == ["a1", "a2"]
    assert [k for k, _ in run.store.scan(b"x")] == []  # the index leaves with the identity


def test_an_identification_value_too_long_to_index_is_a_dead_letter_and_changes_nothing() -> None:
    run = Run()
    run.feed(event("e1"))
    before = list(run.store.scan(b""))
    assert run.feed(event("e2", email="x" * 70_000)) == []
    assert run.dead == [
        "id of 70000 bytes is longer than 65535: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'…"
    ]
    assert list(run.store.scan(b"")) == before


def test_an_erased_identity_leaves_the_person_graph_from_one_copy_of_the_command() -> None:
    """Persons on: partition 0's copy of an erasure by identity erases the value at every
    identification node (a node that never held it changes nothing); other copies, an
    erasure by anonymous id and persons off send nothing to the graph."""
    command = encode(Command(Verb.ERASE, identity="kim@x.com"))
    persons = RecognitionRules(persons=True)

    def sent(rules: RecognitionRules, partition: int, raw: bytes = command) -> list[object]:
        record = InputRecord("control", partition, 0, None, raw, timestamp=5_000)
        state = PartitionState(MemoryStore())
        return list(control([record], state, rules, Counters()).to_persons)

    assert sent(persons, 0) == [Erase((0, "kim@x.com"), 5_000), Erase((1, "kim@x.com"), 5_000)]
    assert sent(persons, 1) == []
    assert sent(RecognitionRules(), 0) == []
    assert sent(persons, 0, encode(Command(Verb.ERASE, anonymous_id="a1"))) == []
