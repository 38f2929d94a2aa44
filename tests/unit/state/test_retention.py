"""Bounded state: waiting events expire after the TTL and are capped per anonymous id."""

from __future__ import annotations

from streams.core.rules import Policy, RecognitionRules
from streams.state.partition import PartitionState
from streams.state.retention import Retention
from tests.unit.stitching import Run, event

MINUTE = 60_000
T0 = 1_700_000_000_000  # a record timestamp, ms


def _statuses(records: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["event_id"], r["status"], r["version"]) for r in records]


def test_events_older_than_the_ttl_leave_state_and_are_not_amended() -> None:
    run = Run(retention=Retention(ttl_ms=60 * MINUTE))
    run.feed(event("old1"), event("old2"), at=T0)
    run.feed(event("young", "1"), at=T0 + 30 * MINUTE)
    run.feed(event("other", "2"), at=T0 + 61 * MINUTE)  # time moves on: old1, old2 expire
    emitted = run.feed(event("who", "1", email="a@b.com"), at=T0 + 62 * MINUTE)
    assert _statuses(emitted) == [("who", "identified", 1), ("young", "amended", 2)]
    assert run.latest()["old1"]["status"] == "anonymous"  # stays as it was emitted
    assert run.counts.expired == 2
    assert run.counts.forgotten == 2


def test_an_event_within_the_ttl_is_amended() -> None:
    run = Run(retention=Retention(ttl_ms=60 * MINUTE))
    run.feed(event("e1"), at=T0)
    run.feed(event("e2", "2"), at=T0 + 60 * MINUTE - 1)
    emitted = run.feed(event("e3", email="a@b.com"), at=T0 + 60 * MINUTE - 1)
    assert ("e1", "amended", 2) in _statuses(emitted)
    assert run.counts.expired == 0


def test_expiry_leaves_nothing_of_an_anonymous_id_but_its_identity() -> None:
    run = Run(retention=Retention(ttl_ms=MINUTE))
    run.feed(event("e1"), event("e2"), event("e3", email="a@b.com"), event("e4"), at=T0)
    run.feed(event("x1", "2"), at=T0 + 2 * MINUTE)
    run.feed(event("x2", "3"), at=T0 + 4 * MINUTE)  # and now x1's arrival expires too
    state = PartitionState(run.store)
    # of "1", only its identity stays; "3" holds x2, which has not expired yet
    assert [k[: 1 + 3] for k, _ in run.store.scan(b"")] == [
        b"h\x00\x013",
        b"n\x00\x013",
        b"p\x00\x011",
        b"s\x00\x013",
        b"t" + (T0 + 4 * MINUTE).to_bytes(8, "big")[:3],
        b"x\x00\x07a",  # "1"'s identity holds a@b.com: the index erasure by identity reads
    ]
    assert state.seen("3", "x2")
    assert not state.seen("1", "e1")
    assert not state.seen("2", "x1")
    assert run.counts.forgotten == 5
    assert run.counts.expired == 3  # x1, and e1 and e2, kept since e3 amended them


def test_a_redelivery_after_the_ttl_is_emitted_again() -> None:
    run = Run(retention=Retention(ttl_ms=MINUTE))
    run.feed(event("e1"), at=T0)
    run.feed(event("x", "2"), at=T0 + 2 * MINUTE)
    assert _statuses(run.feed(event("e1"), at=T0 + 3 * MINUTE)) == [("e1", "anonymous", 1)]


def test_each_batch_expires_at_most_its_budget_oldest_first() -> None:
    run = Run(retention=Retention(ttl_ms=MINUTE, expire_per_batch=2))
    run.feed(*(event(f"e{i}") for i in range(5)), at=T0)
    for _ in range(3):
        run.feed(event("x", "2"), at=T0 + 2 * MINUTE)
    assert run.counts.expired == 5
    assert PartitionState(run.store).held("1") == []


def test_time_never_runs_ahead_of_the_clock() -> None:
    run = Run(retention=Retention(ttl_ms=MINUTE))
    run.feed(event("e1"), at=T0, clock=T0)
    # a producer's clock a year ahead: the batch counts as the worker's clock, nothing expires
    run.feed(event("x", "2"), at=T0 + 365 * 24 * 60 * MINUTE, clock=T0 + 1)
    emitted = run.feed(event("e2", email="a@b.com"), at=T0 + 1, clock=T0 + 1)
    assert ("e1", "amended", 2) in _statuses(emitted)


def test_no_ttl_keeps_events_forever() -> None:
    run = Run(retention=Retention(ttl_ms=None))
    run.feed(event("e1"), at=T0)
    run.feed(event("x", "2"), at=T0 + 10**12)
    assert ("e1", "amended", 2) in _statuses(run.feed(event("e2", email="a@b.com"), at=T0))
    assert not [k for k, _ in run.store.scan(b"t")]


def test_an_anonymous_id_holds_at_most_the_cap_dropping_its_oldest() -> None:
    run = Run(retention=Retention(max_held_per_id=3))
    run.feed(event("e0"), event("e1"))
    run.feed(event("e2"), event("e3"), event("e4"), event("other", "2"))
    assert [h.event_id for h in PartitionState(run.store).held("1")] == ["e2", "e3", "e4"]
    emitted = run.feed(event("e5", email="a@b.com"))
    assert _statuses(emitted)[1:] == [
        ("e2", "amended", 2),
        ("e3", "amended", 2),
        ("e4", "amended", 2),
    ]
    assert run.counts.capped == 2
    assert [v for _, v in run.store.scan(b"n\x00\x011")] == [b"\x00\x00\x00\x03"]  # kept


def test_the_cap_within_one_batch_and_across_many() -> None:
    run = Run(retention=Retention(max_held_per_id=2))
    run.feed(*(event(f"e{i}") for i in range(50)))
    run.feed(*(event(f"f{i}") for i in range(3)))
    assert [h.event_id for h in PartitionState(run.store).held("1")] == ["f1", "f2"]
    assert run.counts.capped == 51


def test_under_latest_identified_and_stitched_events_expire_too() -> None:
    rules = RecognitionRules(policy=Policy.LATEST)
    run = Run(rules, Retention(ttl_ms=MINUTE))
    run.feed(event("e1", email="a@b.com"), event("e2"), at=T0)
    assert [h.event_id for h in PartitionState(run.store).held("1")] == ["e1", "e2"]
    run.feed(event("x", "2"), at=T0 + 2 * MINUTE)
    assert PartitionState(run.store).held("1") == []
    emitted = run.feed(event("e3", email="c@d.com"), at=T0 + 2 * MINUTE)
    assert _statuses(emitted) == [("e3", "identified", 1)]  # nothing left to re-amend


def test_an_identity_expires_after_its_ttl_and_later_events_wait_again() -> None:
    run = Run(retention=Retention(ttl_ms=None, identity_ttl_ms=60 * MINUTE))
    run.feed(event("e1", email="a@b.com"), at=T0)
    [stitched] = run.feed(event("e2"), at=T0 + 59 * MINUTE)
    assert stitched["status"] == "stitched"
    run.feed(event("x", "2"), at=T0 + 61 * MINUTE)  # time moves on: the identity expires
    [waiting] = run.feed(event("e3"), at=T0 + 62 * MINUTE)
    assert (waiting["status"], waiting["stitched_user_id"]) == ("anonymous", "1")
    emitted = run.feed(event("e4", email="a@b.com"), at=T0 + 63 * MINUTE)
    assert ("e3", "amended", 2) in _statuses(emitted)
    assert run.counts.identities_expired == 1


def test_a_new_identification_keeps_the_identity_for_another_ttl_and_erase_leaves_no_key() -> None:
    run = Run(retention=Retention(ttl_ms=None, identity_ttl_ms=60 * MINUTE))
    run.feed(event("e1", email="a@b.com"), at=T0)
    run.feed(event("e2", user_id=7), at=T0 + 50 * MINUTE)  # completes it: set again
    run.feed(event("x", "2"), at=T0 + 70 * MINUTE)
    [stitched] = run.feed(event("e3"), at=T0 + 71 * MINUTE)
    assert stitched["status"] == "stitched"
    assert run.counts.identities_expired == 0
    state = PartitionState(run.store, run.retention)
    state.forget("1")
    run.store.write(state.changes())
    assert [k[:1] for k, _ in run.store.scan(b"") if b"\x00\x011" in k] == []
