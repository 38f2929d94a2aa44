"""The merge limit without I/O: claims, answers and the quarantine (streams.core.merges)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.core.clock import DAY_MS
from streams.core.control import Command, Verb
from streams.core.control import encode as encode_command
from streams.core.errors import BadRecord
from streams.core.merges import (
    Answer,
    Claim,
    Forget,
    MergeLimit,
    Release,
    encode,
    parse_answer,
    parse_claims_record,
)
from streams.core.rules import Policy, RecognitionRules
from streams.pipeline.arbitrate import Quarantined, arbitrate
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import answers, control, stitch
from streams.state.claims import ClaimState
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.unit.stitching import Run, event

T0 = 1_700_000_000_000


class Limited:
    """One stitch partition and one claims partition, wired as the topology wires them."""

    def __init__(
        self, limit: MergeLimit, rules: RecognitionRules | None = None, *, mappings: bool = False
    ) -> None:
        self.limit = limit
        self.run = Run(rules or RecognitionRules(claims=True), mappings=mappings)
        self.claims = MemoryStore()
        self.quarantine: list[Quarantined] = []
        self._offsets = [0, 0]

    def feed(self, *values: bytes, at: int = T0) -> list[dict[str, Any]]:
        """One batch of events; the claims it makes are answered and applied at once."""
        before = len(self.run.records)
        batch = [self._record("events", value, at) for value in values]
        result = stitch(batch, self.run.state(), self.run.rules, self.run.counts, clock_ms=at)
        self.run.store.write(result.changes)
        self.run.records += [orjson.loads(r.value) for r in result.sink]
        self._answer([encode(c) for c in result.claims], at)
        return self.run.records[before:]

    def command(self, command: Command) -> None:
        record = InputRecord("control", 0, 0, None, encode_command(command))
        result = control(
            [record], self.run.state(), self.run.rules, self.run.counts, merge_limit=True
        )
        self.run.store.write(result.changes)
        self.run.records += [orjson.loads(r.value) for r in result.sink]
        self._answer([encode(c) for c in result.claims], T0)

    def count(self, identity: str) -> int:
        return ClaimState(self.claims, self.limit).count(identity)

    def _answer(self, claims: list[bytes], at: int) -> None:
        if not claims:
            return
        records = [self._record("claims", value, at) for value in claims]
        done = arbitrate(
            records, ClaimState(self.claims, self.limit), self.limit, Counters(), clock_ms=at
        )
        self.claims.write(done.changes)
        self.quarantine += done.quarantine
        back = [self._record("answers", encode(answer), at) for _, answer in done.answers]
        applied = answers(back, self.run.state(), self.run.rules, self.run.counts)
        self.run.store.write(applied.changes)
        self.run.records += [orjson.loads(r.value) for r in applied.sink]

    def _record(self, topic: str, value: bytes, at: int) -> InputRecord:
        index = 0 if topic == "events" else 1
        self._offsets[index] += 1
        return InputRecord(topic, 0, self._offsets[index], None, value, at)


def _visitors(n: int, email: str, at: int = T0, first: int = 0) -> list[bytes]:
    """n anonymous ids, each with one anonymous event, then identified as ``email``."""
    values = []
    for i in range(first, first + n):
        values += [event(f"a{i}", f"anon{i}"), event(f"i{i}", f"anon{i}", email=email)]
    return values


def test_an_identity_takes_up_to_the_limit_and_the_next_anonymous_id_is_quarantined() -> None:
    limited = Limited(MergeLimit(max_anonymous_ids=3))
    limited.feed(*_visitors(4, "shared@example.com"))
    latest = limited.run.latest()
    assert [latest[f"a{i}"]["status"] for i in range(4)] == ["amended"] * 3 + ["unmerged"]
    assert (latest["a3"]["stitched_user_id"], latest["a3"]["version"]) == ("anon3", 3)
    assert latest["a3"]["event"] == orjson.loads(event("a3", "anon3"))  # as it arrived
    assert latest["i3"]["status"] == "identified"  # the event itself goes on as it arrived
    [refused] = limited.quarantine
    assert refused.claim.anonymous_id == "anon3"
    assert refused.claim.event == event("i3", "anon3", email="shared@example.com")
    assert "3 other anonymous ids within 30 days" in refused.reason
    assert "shared@example.com" not in refused.reason
    assert limited.count("shared@example.com") == 3
    assert limited.run.counts.refused_anonymous_ids == 1


def test_a_refused_anonymous_id_stays_anonymous_and_later_events_are_not_stitched() -> None:
    limited = Limited(MergeLimit(max_anonymous_ids=1))
    limited.feed(*_visitors(2, "shared@example.com"))
    [later] = limited.feed(event("later", "anon1"))
    assert later["status"] == "anonymous"
    [kept] = limited.feed(event("later0", "anon0"))
    assert (kept["status"], kept["stitched_user_id"]) == ("stitched", "shared@example.com")


def test_events_stitched_before_the_answer_are_undone_by_a_refusal_and_not_kept_after() -> None:
    limited = Limited(MergeLimit(max_anonymous_ids=1))
    limited.feed(*_visitors(1, "p@x"))
    # one batch: the identification, then an event stitched before the answer is back
    limited.feed(event("i1", "anon1", email="p@x"), event("b", "anon1"))
    assert [r["status"] for r in limited.run.records if r["event_id"] == "b"] == [
        "stitched",
        "unmerged",
    ]
    assert limited.run.latest()["b"]["stitched_user_id"] == "anon1"
    # a confirmed anonymous id keeps no stitched event (policy retain)
    held = limited.run.counts.held
    limited.feed(event("c", "anon0"))
    assert limited.run.counts.held == held


def test_below_the_limit_the_sink_is_what_it_is_without_the_limit() -> None:
    batches = [
        _visitors(3, "p@example.com")[:3],
        [*_visitors(3, "p@example.com")[3:], event("x", "anon0")],
        [event("c", "anon1", email="q@example.com"), event("y", "anon1")],  # a conflict
        [event("m", "anon2", user_id=7, email="p@example.com"), event("z", "anon2")],
    ]
    for policy in Policy:
        plain = Run(RecognitionRules(policy=policy))
        plain.feed_batches(batches)
        limited = Limited(MergeLimit(10), RecognitionRules(policy=policy, claims=True))
        for batch in batches:
            limited.feed(*batch)
        assert limited.run.records == plain.records, policy
        assert not limited.quarantine


def test_a_claim_granted_again_is_not_counted_twice_and_a_stale_answer_changes_nothing() -> None:
    limited = Limited(MergeLimit(max_anonymous_ids=1))
    limited.feed(*_visitors(1, "p@x"))
    emitted = limited.feed(event("i0-again", "anon0", email="p@x"))
    assert [r["status"] for r in emitted] == ["identified"]
    assert limited.count("p@x") == 1
    assert not limited.quarantine
    stale = InputRecord("answers", 0, 9, None, encode(Answer("anon0", "other@x", False)))
    done = answers([stale], PartitionState(limited.run.store), limited.run.rules, Counters())
    assert done.sink == []


def test_the_window_lets_an_identity_take_new_anonymous_ids_once_old_ones_age_out() -> None:
    limited = Limited(MergeLimit(max_anonymous_ids=2, window_ms=DAY_MS))
    limited.feed(*_visitors(2, "p@x"))
    limited.feed(*_visitors(1, "p@x", first=2), at=T0 + DAY_MS // 2)
    assert [q.claim.anonymous_id for q in limited.quarantine] == ["anon2"]
    limited.feed(*_visitors(1, "p@x", first=3), at=T0 + DAY_MS + 1)
    assert len(limited.quarantine) == 1
    assert limited.run.latest()["a3"]["status"] == "amended"
    # expiry removed the two old grants (and their time index): state stays bounded
    assert limited.count("p@x") == 1
    assert len(list(limited.claims.scan(b""))) == 2


def test_unmerge_and_erase_release_the_slots_they_held() -> None:
    limited = Limited(MergeLimit(max_anonymous_ids=2))
    limited.feed(*_visitors(2, "p@x"))
    limited.command(Command(Verb.UNMERGE, anonymous_id="anon0"))
    assert limited.count("p@x") == 1
    limited.command(Command(Verb.ERASE, anonymous_id="anon1"))
    assert limited.count("p@x") == 0
    limited.feed(*_visitors(2, "p@x", first=2))
    assert not limited.quarantine
    assert limited.count("p@x") == 2
    limited.command(Command(Verb.ERASE, identity="p@x"))
    assert list(limited.claims.scan(b"")) == []


def test_without_claims_rules_identify_at_once() -> None:
    run = Run(RecognitionRules(claims=False))
    run.feed(*_visitors(1, "p@x"))
    assert run.latest()["a0"]["status"] == "amended"


def test_claims_records_round_trip_byte_for_byte() -> None:
    raw = b'{"user": {"anonymous_id": "a\\n"},\n "x": 1.50}'
    claim = Claim("p@x", "a\n", 3, 17, "events[3]@17", raw, T0)
    assert parse_claims_record(encode(claim)) == claim
    assert parse_claims_record(encode(Release("p@x", "a"))) == Release("p@x", "a")
    assert parse_claims_record(encode(Forget("p@x"))) == Forget("p@x")
    for granted in (True, False):
        assert parse_answer(encode(Answer("a", "p@x", granted))) == Answer("a", "p@x", granted)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"nope", "not valid JSON"),
        (b'{"claim": {"identity": "p"}}\n{}', "anonymous_id must be a string"),
        (b'{"steal": {}}', "unknown claims record 'steal'"),
        (b'{"claim": {"identity": "p", "anonymous_id": "a", "partition": 0, "offset": 1, '
         b'"source": "s", "timestamp": 0}}', "carries no event"),
    ],
)  # fmt: skip
def test_bad_claims_records_are_dead_letters_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        parse_claims_record(raw)
    record = InputRecord("claims", 0, 0, None, raw)
    limit = MergeLimit()
    done = arbitrate([record], ClaimState(MemoryStore(), limit), limit, Counters(), clock_ms=T0)
    assert [reason in letter.reason for letter in done.dead] == [True]


def test_any_prefix_of_a_claims_batch_leaves_no_grant_without_its_time_index() -> None:
    limit = MergeLimit(max_anonymous_ids=5, window_ms=DAY_MS)
    claims = [Claim("p@x", f"anon{i}", 0, i, "s", b"{}", T0) for i in range(3)]
    store = MemoryStore()
    first = ClaimState(store, limit)
    for claim in claims[:2]:
        first.claim(claim, T0)
    store.write(first.changes())
    batch = ClaimState(store, limit)
    batch.release("p@x", "anon0")
    batch.claim(claims[2], T0 + 1)
    batch.expire(T0 + 1)
    changes = batch.changes()
    for landed in range(len(changes) + 1):
        crashed = MemoryStore()
        crashed.write(store.scan(b""))
        crashed.write(changes[:landed])
        rerun = ClaimState(crashed, limit)  # the batch again
        rerun.release("p@x", "anon0")
        rerun.claim(claims[2], T0 + 1)
        crashed.write(rerun.changes())
        later = ClaimState(crashed, limit)
        later.expire(T0 + 2 * DAY_MS)  # everything is out of the window by now
        crashed.write(later.changes())
        assert list(crashed.scan(b"")) == [], f"{landed} of {len(changes)} changes landed"
