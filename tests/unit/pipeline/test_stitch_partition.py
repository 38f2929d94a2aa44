"""One partition's records of a batch: events first, then answers, then commands,
whatever order the topics' records arrive in; every change in one changelog list."""

from __future__ import annotations

import orjson

from streams.core.control import Command, Verb, encode
from streams.core.rules import RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import Sources, stitch_partition
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.unit.stitching import event

SOURCES = Sources(control="control", answers="answers")


def test_an_erasure_goes_before_the_events_of_its_batch() -> None:
    """Events of the erased id up to the erasure's time are never emitted, even in the
    erasure's own batch; a later event of it starts afresh."""
    store = MemoryStore()
    erase = InputRecord(
        "control", 0, 0, None, encode(Command(Verb.ERASE, anonymous_id="1")), timestamp=100
    )
    records = [
        InputRecord("events", 0, 0, b"1", event("e1"), timestamp=50),
        InputRecord("events", 0, 1, b"1", event("e2", email="a@b.com"), timestamp=60),
        erase,
        InputRecord("events", 0, 2, b"1", event("e3"), timestamp=200),
    ]
    counts = Counters()
    done = stitch_partition(records, PartitionState(store), RecognitionRules(), counts, SOURCES)
    emitted = [
        (r.get("event_id"), r["status"]) for r in map(orjson.loads, (s.value for s in done.sink))
    ]
    assert emitted == [(None, "erase"), ("e3", "anonymous")]
    assert counts.erased_on_arrival == 2
    assert not done.dead
    store.write(done.changes)
    after = PartitionState(store)
    assert after.identity("1") is None
    assert [held.event_id for held in after.held("1")] == ["e3"]
    assert not after.seen("1", "e1")


def test_an_unmerge_applies_after_the_events_of_its_batch() -> None:
    store = MemoryStore()
    unmerge = InputRecord("control", 0, 0, None, encode(Command(Verb.UNMERGE, anonymous_id="1")))
    records = [
        unmerge,
        InputRecord("events", 0, 0, b"1", event("e1")),
        InputRecord("events", 0, 1, b"1", event("e2", email="a@b.com")),
    ]
    done = stitch_partition(records, PartitionState(store), RecognitionRules(), Counters(), SOURCES)
    emitted = [
        (r.get("event_id"), r["status"]) for r in map(orjson.loads, (s.value for s in done.sink))
    ]
    assert emitted[:3] == [("e1", "anonymous"), ("e2", "identified"), ("e1", "amended")]
    store.write(done.changes)
    assert PartitionState(store).identity("1") is None  # the un-merge came after them
