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


def test_a_command_applies_after_the_events_of_its_batch() -> None:
    store = MemoryStore()
    erase = InputRecord("control", 0, 0, None, encode(Command(Verb.ERASE, anonymous_id="1")))
    records = [
        erase,
        InputRecord("events", 0, 0, b"1", event("e1")),
        InputRecord("events", 0, 1, b"1", event("e2", email="a@b.com")),
    ]
    counts = Counters()
    done = stitch_partition(records, PartitionState(store), RecognitionRules(), counts, SOURCES)
    emitted = [
        (r.get("event_id"), r["status"]) for r in map(orjson.loads, (s.value for s in done.sink))
    ]
    assert emitted[:3] == [("e1", "anonymous"), ("e2", "identified"), ("e1", "amended")]
    assert ("e1", "erased") in emitted
    assert ("e2", "erased") in emitted
    assert counts.erased_events == 2
    assert not done.dead
    store.write(done.changes)  # the events' state and its erasure, in one list
    after = PartitionState(store)
    assert after.identity("1") is None
    assert after.held("1") == []
    assert not after.seen("1", "e1")
