"""The user mapping rows (identity records, Snowplow's user mapping table) without I/O."""

from __future__ import annotations

from typing import Any

import orjson

from streams.core.control import Command, Verb, encode
from streams.core.merges import MergeLimit
from streams.core.persons import identifier_id
from streams.core.rules import Policy, RecognitionRules
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import control
from streams.state.keys import MAPPING
from streams.state.retention import Retention
from tests.unit.pipeline.test_merges import T0, Limited
from tests.unit.stitching import Run, event


def _mappings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == "identity"]


def _command(run: Run, command: Command, at: int) -> list[dict[str, Any]]:
    record = InputRecord("control", 1, 0, None, encode(command), at)
    result = control([record], run.state(), run.rules, run.counts)
    run.store.write(result.changes)
    emitted = [orjson.loads(r.value) for r in result.sink]
    run.records += emitted
    return emitted


def test_an_identification_emits_the_mapping_row_with_its_times() -> None:
    run = Run(mappings=True)
    run.feed(event("e1"), at=1_000)
    run.feed(event("e2"), at=2_000)
    [row] = _mappings(run.feed(event("e3", email="a@b.com"), at=3_000))
    assert row == {
        "status": "identity", "anonymous_id": "1", "stitched_user_id": "a@b.com",
        "version": 3_000, "mapping": "identified",
        "identification": {"user": {"email": "a@b.com"}},
        "first_seen": 1_000, "first_identified": 3_000, "last_identified": 3_000,
    }  # fmt: skip
    # the same identity again changes nothing; a stitched event neither
    assert _mappings(run.feed(event("e4", email="a@b.com"), event("e5"), at=4_000)) == []
    # the user id completes it: a new version, first identified kept
    [row] = _mappings(run.feed(event("e6", email="a@b.com", user_id="u1"), at=5_000))
    assert (row["stitched_user_id"], row["version"]) == ("u1", 5_000)
    assert row["identification"] == {"user": {"id": "u1", "email": "a@b.com"}}
    assert (row["first_seen"], row["first_identified"], row["last_identified"]) == (
        1_000, 3_000, 5_000,
    )  # fmt: skip
    assert run.counts.mappings == 2


def test_a_first_event_that_identifies_is_first_seen_then_and_versions_always_grow() -> None:
    run = Run(mappings=True)
    # two changes in one millisecond, and a producer clock gone back: still one up each
    emitted = run.feed(event("e1", email="a@b.com"), event("e2", email="z@b.com"), at=7_000)
    first, second = _mappings(emitted)
    assert (first["first_seen"], first["version"], second["version"]) == (7_000, 7_000, 7_001)
    [third] = _mappings(run.feed(event("e3", email="y@b.com"), at=10))
    assert third["version"] == 7_002


def test_an_unmerge_puts_the_row_back_to_anonymous() -> None:
    run = Run(mappings=True)
    run.feed(event("e1"), event("e2", email="a@b.com"), at=1_000)
    [row] = _mappings(_command(run, Command(Verb.UNMERGE, anonymous_id="1"), 9_000))
    assert (row["mapping"], row["stitched_user_id"], row["identification"]) == (
        "anonymous", "1", {},
    )  # fmt: skip
    assert (row["version"], row["first_identified"], row["last_identified"]) == (
        9_000, 1_000, 1_000,
    )  # fmt: skip


def test_an_erasure_erases_the_row_and_a_later_identification_outranks_it() -> None:
    run = Run(mappings=True)
    run.feed(event("e1"), event("e2", email="a@b.com"), at=1_000)
    [marker] = _mappings(_command(run, Command(Verb.ERASE, anonymous_id="1"), 5_000))
    assert (marker["mapping"], marker["version"], marker["identification"]) == ("erased", 5_000, {})
    assert list(run.store.scan(MAPPING)) == []
    [again] = _mappings(run.feed(event("e3", email="b@b.com"), at=6_000))
    assert again["version"] > marker["version"]
    assert again["first_seen"] == 6_000  # state remembers nothing from before the erasure


def test_an_erasure_by_identity_erases_the_row_of_every_anonymous_id_so_identified() -> None:
    run = Run(mappings=True)
    run.feed(event("a1", "A", email="p@x.com"), event("b1", "B", email="p@x.com"), at=1_000)
    emitted = _command(run, Command(Verb.ERASE, identity="p@x.com"), 2_000)
    assert sorted((r["anonymous_id"], r["mapping"]) for r in _mappings(emitted)) == [
        ("A", "erased"), ("B", "erased"),
    ]  # fmt: skip


def test_the_merge_limits_refusal_puts_the_row_back_to_anonymous() -> None:
    limited = Limited(MergeLimit(max_anonymous_ids=1), mappings=True)
    limited.feed(event("a0", "anon0"), event("i0", "anon0", email="s@x.com"))
    limited.feed(event("a1", "anon1"), event("i1", "anon1", email="s@x.com"), at=T0 + 1)
    latest = limited.run.latest()
    assert latest["identity:anon0"]["mapping"] == "identified"
    refused = latest["identity:anon1"]
    assert (refused["mapping"], refused["stitched_user_id"]) == ("anonymous", "anon1")
    assert refused["first_identified"] == T0 + 1  # it was identified, then refused


def test_latest_policy_maps_each_new_identity() -> None:
    run = Run(RecognitionRules(policy=Policy.LATEST), mappings=True)
    run.feed(event("e1"), event("e2", user_id="A"), at=1_000)
    [row] = _mappings(run.feed(event("e3", user_id="B"), at=2_000))
    assert (row["stitched_user_id"], row["version"], row["first_identified"]) == ("B", 2_000, 1_000)


def test_the_row_leaves_state_with_the_last_held_event_of_an_anonymous_visitor() -> None:
    run = Run(retention=Retention(ttl_ms=1_000), mappings=True)
    run.feed(event("e1", "A"), event("x1", "X", email="x@x.com"), at=1_000)
    assert len(list(run.store.scan(MAPPING))) == 2  # A first seen, X identified
    run.feed(event("late", "B"), at=10_000)  # A's event expires; X keeps its identity
    rows = [key for key, _ in run.store.scan(MAPPING)]
    assert [key[3:] for key in rows] == [b"B", b"X"]


def test_without_identity_records_nothing_is_kept_or_emitted() -> None:
    run = Run()
    run.feed(event("e1"), event("e2", email="a@b.com"))
    assert _mappings(run.records) == []
    assert list(run.store.scan(MAPPING)) == []


def test_with_persons_each_mapping_row_names_its_anonymous_ids_person() -> None:
    """Persons on: a mapping row carries its anonymous id's identifier id as its
    ``person_key`` (the warehouses give it the person of that persons row), identified or
    put back to anonymous."""
    run = Run(RecognitionRules(persons=True), mappings=True)
    [row] = _mappings(run.feed(event("e1", email="a@b.com"), at=1_000))
    assert row["person_key"] == identifier_id("1")
    [row] = _mappings(_command(run, Command(Verb.UNMERGE, anonymous_id="1"), 2_000))
    assert (row["mapping"], row["person_key"]) == ("anonymous", identifier_id("1"))
    assert "person_key" not in _mappings(Run(mappings=True).feed(event("e1", email="a@b.com")))[0]
