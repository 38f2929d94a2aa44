"""Every stitching rule, through the pipeline and an in-memory store (no I/O)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from streams.core.errors import BadRecord
from streams.core.pointer import Pointer
from streams.core.rules import Policy, RecognitionRules, derived_event_id, parse
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import stitch
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.unit.stitching import Run, event

SEED = [
    event("event1"),
    event("event2"),
    event("event3", email="a@b.com"),
    event("event4", email="a@b.com"),
]
LATEST = RecognitionRules(policy=Policy.LATEST)


def _summary(records: list[dict[str, Any]]) -> list[tuple[str, int, str, Any]]:
    return [
        (r["event_id"], r["version"], r["status"], r["event"]["user"].get("email")) for r in records
    ]


# -- the seed's example ----------------------------------------------------------------


def test_seed_example_amends_event1_and_event2_right_after_event3() -> None:
    run = Run()
    assert _summary(run.feed(SEED[0])) == [("event1", 1, "anonymous", None)]
    assert _summary(run.feed(SEED[1])) == [("event2", 1, "anonymous", None)]
    assert _summary(run.feed(SEED[2])) == [
        ("event3", 1, "identified", "a@b.com"),
        ("event1", 2, "amended", "a@b.com"),
        ("event2", 2, "amended", "a@b.com"),
    ]
    assert _summary(run.feed(SEED[3])) == [("event4", 1, "identified", "a@b.com")]
    latest = run.latest()
    assert {e: r["event"]["user"]["email"] for e, r in latest.items()} == dict.fromkeys(
        ("event1", "event2", "event3", "event4"), "a@b.com"
    )
    assert {r["stitched_user_id"] for r in latest.values()} == {"a@b.com"}


def test_seed_example_in_one_batch_gives_the_same_records() -> None:
    one_by_one, together = Run(), Run()
    for value in SEED:
        one_by_one.feed(value)
    together.feed(*SEED)
    assert together.records == one_by_one.records


# -- rule 1: bad records ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"user": ', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object but a JSON list"),
        (b'"text"', "not a JSON object but a JSON str"),
        (b"null", "not a JSON object but a JSON NoneType"),
        (b'{"eventn_ctx_event_id": {"a": 1}}', "event id at /eventn_ctx_event_id must be"),
        (b'{"eventn_ctx_event_id": true}', "event id at /eventn_ctx_event_id must be"),
    ],
)
def test_bad_records_are_dead_lettered_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=re.escape(reason)):
        parse(raw, RecognitionRules())
    run = Run()
    run.feed(event("before"), raw, event("after"))
    assert [r["event_id"] for r in run.records] == ["before", "after"]
    assert len(run.dead) == 1
    assert run.dead[0].startswith(reason)
    assert run.counts.dead_lettered == 1


def test_a_tombstone_is_dead_lettered() -> None:
    result = stitch(
        [InputRecord("t", 0, 0, b"k", None)],
        PartitionState(MemoryStore()),
        RecognitionRules(),
        Counters(),
    )
    assert [d.reason for d in result.dead] == [
        "record has no value (a tombstone on the event topic)"
    ]


def test_an_input_keyed_by_anonymous_id_must_carry_it_as_the_key() -> None:
    """With topics.input_keyed_by_anonymous_id the record's partition is trusted to hold
    its anonymous id's state: an event keyed otherwise cannot be stitched there."""
    records = [
        InputRecord("t", 0, 0, b"1", event("keyed")),
        InputRecord("t", 0, 1, b"someone-else", event("misrouted")),
        InputRecord("t", 0, 2, None, event("unkeyed")),
        InputRecord("t", 0, 3, b"whatever", event("no-anonymous-id", anonymous_id=None)),
    ]
    counts: Counters = Counters()
    result = stitch(records, PartitionState(MemoryStore()), RecognitionRules(), counts, keyed=True)

    assert [orjson.loads(r.value)["event_id"] for r in result.sink] == ["keyed", "no-anonymous-id"]
    assert [(d.record.offset, d.reason) for d in result.dead] == [
        (1, "key b'someone-else' is not the event's anonymous id '1', and "
            "topics.input_keyed_by_anonymous_id says the input is keyed by it"),
        (2, "key (none) is not the event's anonymous id '1', and "
            "topics.input_keyed_by_anonymous_id says the input is keyed by it"),
    ]  # fmt: skip
    assert counts.received == 4


# -- rule 2: no usable anonymous id ----------------------------------------------------

JUNK = [
    "", "  ", "null", "NULL", "undefined", "None", "nan", "anonymous", "0", "[object Object]",
    "00000000-0000-0000-0000-000000000000", "-", None, True, 1.5, {"id": 1}, ["a"],
]  # fmt: skip


@pytest.mark.parametrize("anonymous_id", JUNK)
def test_junk_anonymous_ids_pass_through_untouched_and_nothing_is_stored(anonymous_id: Any) -> None:
    run = Run()
    raw = event("e1", anonymous_id)
    (record,) = run.feed(raw)
    assert record["status"] == "passthrough"
    assert record["anonymous_id"] is None
    assert record["stitched_user_id"] is None
    assert orjson.dumps(record["event"]) == raw  # untouched
    assert list(run.store.scan(b"")) == []


def test_a_missing_anonymous_id_passes_through_with_its_own_identity() -> None:
    run = Run()
    (record,) = run.feed(orjson.dumps({"eventn_ctx_event_id": "e1", "user": {"id": "u-1"}}))
    assert (record["status"], record["stitched_user_id"]) == ("passthrough", "u-1")
    assert list(run.store.scan(b"")) == []


@pytest.mark.parametrize("anonymous_id", ["1", 1, "0000-1", " abc ", "nullable", "a\x00b"])
def test_real_anonymous_ids_are_recognised(anonymous_id: Any) -> None:
    (record,) = Run().feed(event("e1", anonymous_id))
    assert record["status"] == "anonymous"
    assert record["anonymous_id"] == str(anonymous_id)


def test_junk_list_and_pattern_are_configurable() -> None:
    rules = RecognitionRules(junk_ids=frozenset({"guest"}), junk_pattern=re.compile(r"tmp-.*"))
    run = Run(rules)
    statuses = [
        r["status"] for r in run.feed(event("a", "Guest"), event("b", "tmp-9"), event("c", "null"))
    ]
    assert statuses == ["passthrough", "passthrough", "anonymous"]


def test_recognition_disabled_passes_everything_through() -> None:
    run = Run(RecognitionRules(enabled=False))
    records = run.feed(*SEED)
    assert {r["status"] for r in records} == {"passthrough"}
    assert list(run.store.scan(b"")) == []


# -- rules 3, 4, 5: identify, stitch at once, hold -------------------------------------


def test_identification_writes_every_identification_value_into_held_events() -> None:
    run = Run()
    run.feed(event("e1"), event("e2", page={"url": "/x"}))
    emitted = run.feed(event("e3", email="a@b.com", user_id=42))
    amended = {r["event_id"]: r for r in emitted if r["status"] == "amended"}
    assert amended["e2"]["event"] == {
        "user": {"anonymous_id": "1", "email": "a@b.com", "id": 42},
        "page": {"url": "/x"},
        "eventn_ctx_event_id": "e2",
    }
    assert amended["e1"]["stitched_user_id"] == 42  # the first identification node: /user/id
    assert run.counts.amended == 2


def test_amended_events_stay_in_state_for_an_unmerge_and_are_amended_once() -> None:
    run = Run()
    run.feed(event("e1"), event("e2"))
    assert run.counts.held == 2
    run.feed(event("e3", email="a@b.com"))
    held = PartitionState(run.store).held("1")
    assert [(h.event_id, h.version) for h in held] == [("e1", 2), ("e2", 2)]
    run.feed(event("e4", email="a@b.com"))
    assert run.records[-1]["event_id"] == "e4"  # nothing re-emitted a second time


def test_anonymous_events_after_identification_are_stitched_at_once() -> None:
    run = Run()
    run.feed(event("e1", email="a@b.com"))
    (record,) = run.feed(event("e2"))
    assert (record["status"], record["version"]) == ("stitched", 1)
    assert record["event"]["user"]["email"] == "a@b.com"
    assert record["stitched_user_id"] == "a@b.com"
    assert [k for k, _ in run.store.scan(b"h")] == []  # retain: nothing held after identity


def test_anonymous_events_of_unknown_ids_are_emitted_as_is_and_held() -> None:
    run = Run()
    raw = event("e1", page={"url": "/"})
    (record,) = run.feed(raw)
    assert record == {
        "event_id": "e1",
        "anonymous_id": "1",
        "stitched_user_id": "1",
        "version": 1,
        "status": "anonymous",
        "event": orjson.loads(raw),
    }
    assert len(list(run.store.scan(b"h"))) == 1


def test_identities_of_different_anonymous_ids_do_not_mix() -> None:
    run = Run()
    run.feed(event("a1", "A"), event("b1", "B"), event("a2", "A", email="a@x.com"))
    assert run.latest()["b1"]["event"]["user"].get("email") is None
    assert run.latest()["a1"]["event"]["user"]["email"] == "a@x.com"


def test_junk_identification_values_do_not_identify() -> None:
    run = Run()
    run.feed(event("e1"))
    records = run.feed(event("e2", email="null", user_id=""))
    assert [r["status"] for r in records] == ["anonymous"]


def test_a_non_conflicting_newer_identity_completes_the_current_one() -> None:
    run = Run()
    run.feed(event("e1", user_id="u-1"))
    run.feed(event("e2", user_id="u-1", email="a@b.com"))
    (stitched,) = run.feed(event("e3"))
    assert stitched["event"]["user"] == {"anonymous_id": "1", "id": "u-1", "email": "a@b.com"}
    assert run.counts.conflicts == 0


@pytest.mark.parametrize("policy", list(Policy))
def test_an_event_that_completes_the_identity_keeps_the_ids_stitched_user_id(
    policy: Policy,
) -> None:
    """An email arriving for a known user id is the same person: every row of the anonymous
    id, this one too, has the user id as its stitched user id."""
    run = Run(RecognitionRules(policy=policy))
    run.feed(event("e1"), event("e2", user_id="u-1"), event("e3", email="a@b.com"), event("e4"))
    latest = run.latest()
    assert {e: r["stitched_user_id"] for e, r in latest.items()} == dict.fromkeys(
        ("e1", "e2", "e3", "e4"), "u-1"
    )
    assert latest["e3"]["event"]["user"] == {"anonymous_id": "1", "email": "a@b.com"}


# -- rule 6: a new identity on an identified anonymous id -------------------------------


def _shared_device(run: Run) -> None:
    run.feed(event("e1"))
    run.feed(event("e2", email="ann@x.com"))
    run.feed(event("e3"))
    run.feed(event("e4", email="bob@x.com"))
    run.feed(event("e5"))


def test_retain_keeps_earlier_identities_and_counts_the_conflict() -> None:
    run = Run()
    _shared_device(run)
    emails = {e: r["event"]["user"]["email"] for e, r in run.latest().items()}
    assert emails == {
        "e1": "ann@x.com", "e2": "ann@x.com", "e3": "ann@x.com",
        "e4": "bob@x.com", "e5": "bob@x.com",
    }  # fmt: skip
    assert run.counts.conflicts == 1
    assert [r["event_id"] for r in run.records].count("e3") == 1  # never re-emitted


def test_latest_gives_every_event_the_newest_identity_each_keeping_its_own_fields() -> None:
    """Snowplow's "latest user id wins": the stitched user id of every row follows the newest
    identity, identified rows included; every row's identification stays what it carried."""
    run = Run(LATEST)
    _shared_device(run)
    latest = run.latest()
    assert {e: r["stitched_user_id"] for e, r in latest.items()} == dict.fromkeys(
        ("e1", "e2", "e3", "e4", "e5"), "bob@x.com"
    )
    assert {e: r["event"]["user"].get("email") for e, r in latest.items()} == {
        "e1": None, "e2": "ann@x.com", "e3": None, "e4": "bob@x.com", "e5": None,
    }  # fmt: skip
    assert {e: r["version"] for e, r in latest.items()} == {
        "e1": 3, "e2": 2, "e3": 2, "e4": 1, "e5": 1,
    }  # fmt: skip
    for event_id in ("e1", "e3", "e5"):  # as they arrived: only their stitched user id set
        assert latest[event_id]["event"] == orjson.loads(event(event_id))
    assert latest["e2"]["status"] == "amended"
    assert run.counts.restitched == 1  # e2, once bob logged in
    assert orjson.loads(orjson.dumps(latest["e2"]["event"])) == orjson.loads(
        event("e2", email="ann@x.com")
    )
    assert run.counts.conflicts == 1


def test_latest_does_not_re_emit_when_the_identity_is_unchanged() -> None:
    run = Run(LATEST)
    run.feed(event("e1"), event("e2", email="a@b.com"))
    before = len(run.records)
    run.feed(event("e3", email="a@b.com"))
    assert len(run.records) == before + 1


# -- rule 7: re-delivery -----------------------------------------------------------------


@pytest.mark.parametrize("policy", list(Policy))
def test_a_redelivered_event_emits_nothing_whatever_the_order(policy: Policy) -> None:
    run = Run(RecognitionRules(policy=policy))
    run.feed(SEED[0], SEED[0])
    run.feed(SEED[2], SEED[0], SEED[2])
    run.feed(SEED[0])
    assert sorted((r["event_id"], r["version"]) for r in run.records) == [
        ("event1", 1), ("event1", 2), ("event3", 1),
    ]  # fmt: skip
    assert run.counts.duplicates == 4


# -- rule 8: derived event ids -------------------------------------------------------------


def test_events_without_an_id_get_one_derived_from_their_content() -> None:
    first = orjson.dumps({"b": 1, "user": {"anonymous_id": "1"}, "a": [1, 2]})
    reordered = orjson.dumps({"a": [1, 2], "user": {"anonymous_id": "1"}, "b": 1})
    other = orjson.dumps({"b": 2, "user": {"anonymous_id": "1"}, "a": [1, 2]})
    ids = [parse(raw, RecognitionRules()).event_id for raw in (first, reordered, other)]
    assert ids[0] == ids[1] != ids[2]
    assert re.fullmatch(r"[0-9a-f]{32}", ids[0])
    assert ids[0] == derived_event_id(orjson.loads(first))
    run = Run()
    run.feed(first, reordered)
    assert len(run.records) == 1  # the same content is the same event


@pytest.mark.parametrize(("value", "expected"), [(7, "7"), ("abc", "abc")])
def test_integer_and_string_event_ids_are_kept(value: Any, expected: str) -> None:
    raw = orjson.dumps({"eventn_ctx_event_id": value, "user": {"anonymous_id": "1"}})
    assert parse(raw, RecognitionRules()).event_id == expected


def test_a_blank_event_id_counts_as_missing() -> None:
    raw = orjson.dumps({"eventn_ctx_event_id": " ", "user": {"anonymous_id": "1"}})
    assert len(parse(raw, RecognitionRules()).event_id) == 32


# -- configured nodes --------------------------------------------------------------------


def test_segment_shaped_events_with_configured_nodes() -> None:
    rules = RecognitionRules(
        anonymous_ids=(Pointer.parse("/anonymousId"),),
        identification=(Pointer.parse("/userId"), Pointer.parse("/traits/email")),
        event_id=Pointer.parse("/messageId"),
    )
    run = Run(rules)
    run.feed(orjson.dumps({"messageId": "m1", "anonymousId": "x", "type": "page"}))
    run.feed(orjson.dumps({"messageId": "m2", "anonymousId": "x", "userId": "u7"}))
    amended = run.latest()["m1"]
    assert (amended["version"], amended["event"]["userId"]) == (2, "u7")
    assert "traits" not in amended["event"]  # only non-null values are written


def test_several_anonymous_id_nodes_the_first_usable_value_wins() -> None:
    rules = RecognitionRules(
        anonymous_ids=tuple(
            Pointer.parse(p) for p in ("/user/anonymous_id", "/anonymousId", "/domain_userid")
        ),
        identification=(Pointer.parse("/user/email"), Pointer.parse("/userId")),
    )
    jitsu = {"eventn_ctx_event_id": "j", "user": {"anonymous_id": "a1"}, "anonymousId": "other"}
    segment = {"eventn_ctx_event_id": "s", "user": {"anonymous_id": "null"}, "anonymousId": "a1"}
    snowplow = {"eventn_ctx_event_id": "p", "domain_userid": "a1", "anonymousId": None}
    nobody = {"eventn_ctx_event_id": "n", "anonymousId": "undefined", "domain_userid": 7.5}
    assert [parse(orjson.dumps(e), rules).anonymous_id for e in (jitsu, segment, snowplow)] == [
        "a1",
        "a1",
        "a1",
    ]
    assert parse(orjson.dumps(nobody), rules).anonymous_id is None
    run = Run(rules)
    run.feed(*(orjson.dumps(e) for e in (jitsu, segment, snowplow)))
    run.feed(orjson.dumps({"eventn_ctx_event_id": "i", "domain_userid": "a1", "userId": "u7"}))
    assert {e: (r["version"], r["stitched_user_id"]) for e, r in run.latest().items()} == {
        "j": (2, "u7"),
        "s": (2, "u7"),
        "p": (2, "u7"),
        "i": (1, "u7"),
    }


# -- bots (Jitsu's filter) ---------------------------------------------------------------


def test_a_bots_events_pass_through_never_held_never_stitched() -> None:
    run = Run()
    crawler = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    run.feed(
        event("b1", "bot-visitor", user_agent=crawler),
        event("h1", "1", user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"),
        event("b2", "1", email="a@b.com", user_agent="SomeCRAWLer/1.0"),
        event("h2", "1", email="a@b.com"),
    )
    emitted = [(r["event_id"], r["status"], r["version"]) for r in run.records]
    assert emitted == [
        ("b1", "passthrough", 1),
        ("h1", "anonymous", 1),
        ("b2", "passthrough", 1),  # a bot that identifies does not identify the visitor
        ("h2", "identified", 1),
        ("h1", "amended", 2),
    ]
    assert run.counts.bots == 2
    state = PartitionState(run.store)
    assert state.held("bot-visitor") == []
    assert not state.seen("bot-visitor", "b1")


def test_the_bot_filter_can_be_turned_off_and_its_markers_changed() -> None:
    crawler = event("b1", "1", user_agent="Googlebot/2.1")
    off = Run(RecognitionRules(bot_user_agent=None))
    assert [r["status"] for r in off.feed(crawler)] == ["anonymous"]
    own = Run(RecognitionRules(bot_markers=("headless",)))
    assert [r["status"] for r in own.feed(crawler)] == ["anonymous"]
    assert [r["status"] for r in own.feed(event("b2", "1", user_agent="HeadlessChrome"))] == [
        "passthrough"
    ]


@pytest.mark.parametrize(
    ("policy", "stitched"),
    [(Policy.RETAIN, "AAAAAABB"), (Policy.LATEST, "BBBBBBBB")],
)
def test_the_readme_table_of_both_policies_on_a_shared_device(
    policy: Policy, stitched: str
) -> None:
    """docs/rules.md, rule 6: three anonymous events, A logs in, two, B logs in, one."""
    run = Run(RecognitionRules(policy=policy))
    emails = [None, None, None, "a", None, None, "b", None]
    run.feed(*(event(f"e{i + 1}", "d", email=email) for i, email in enumerate(emails)))
    latest = run.latest()
    assert "".join(latest[f"e{i}"]["stitched_user_id"] for i in range(1, 9)) == stitched.lower()
    written = "".join(latest[f"e{i}"]["event"]["user"].get("email", "-") for i in range(1, 9))
    assert written == ("aaaaaabb" if policy is Policy.RETAIN else "---a--b-")
