"""Connector throughput: rows/s from the sink topic into a warehouse.

100,000 sink records (mix a through the stitching rules, in memory, identity records on:
the user mapping table is written too) are produced to a fresh sink topic; then a connector
consumes them in a consumer group and writes them in batches, as ``retrostitch sink`` does.
Rows/s (events table and mapping table together) counts from the end of the first batch
written to the last, so the group join and table creation are left out.

With persons (``person_sink_records``): mix p's records with persons on, the persons
agent's person rows and merges among them, as the worker emits them; records/s then
counts the persons table's rows and the merges applied too.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

from confluent_kafka import Producer

from connectors.base import Warehouse
from connectors.runner import BatchingSink
from streams.core.persons import PersonLimits
from streams.core.persons_codec import encode
from streams.core.record import SinkRecord
from streams.core.rules import RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.persons import resolve
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import stitch
from streams.settings import Settings
from streams.state.partition import PartitionState
from streams.state.persons import PersonGraph
from streams.state.store import MemoryStore
from tests.bench.workload import MIXES, events

#: the identification nodes' names, as the persons table's kinds
NODES = ("/user/id", "/user/email")

__all__ = ["person_sink_records", "produce_sink_records", "sink_records", "throughput"]


def sink_records(count: int) -> list[SinkRecord]:
    """The first ``count`` sink records of mix a, as the stitcher emits them."""
    store = MemoryStore()
    records = (
        InputRecord("bench", 0, offset, anonymous_id.encode(), value)
        for offset, (anonymous_id, value, _) in enumerate(events(MIXES["a"]))
    )
    out: list[SinkRecord] = []
    for chunk in _chunks(records, 1000):
        state = PartitionState(store, mappings=True)
        result = stitch(chunk, state, RecognitionRules(), Counters())
        store.write(result.changes)
        out += result.sink
        if len(out) >= count:
            break
    return out[:count]


def person_sink_records(count: int) -> list[SinkRecord]:
    """The first ``count`` sink records of mix p with persons on: each batch's event and
    mapping records, then what the persons agent made of its messages (person rows and
    merges), as the worker interleaves them."""
    rules = RecognitionRules(persons=True)
    limits = PersonLimits()
    store, graph_store = MemoryStore(), MemoryStore()
    records = (
        InputRecord("bench", 0, offset, anonymous_id.encode(), value)
        for offset, (anonymous_id, value, _) in enumerate(events(MIXES["p"]))
    )
    out: list[SinkRecord] = []
    offset = 0
    for chunk in _chunks(records, 1000):
        state = PartitionState(store, mappings=True)
        result = stitch(chunk, state, rules, Counters(), persons=True)
        store.write(result.changes)
        out += result.sink
        queue = list(result.to_persons)
        while queue:  # the persons agent's turn: every message until the graph settles
            batch = [
                InputRecord("persons", 0, offset + i, None, encode(m)) for i, m in enumerate(queue)
            ]
            offset += len(batch)
            resolved = resolve(batch, PersonGraph(graph_store), limits, NODES, Counters())
            graph_store.write(resolved.changes)
            out += resolved.sink
            queue = resolved.sends
        if len(out) >= count:
            break
    return out[:count]


def produce_sink_records(settings: Settings, records: list[SinkRecord]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "linger.ms": 20,
            "partitioner": "murmur2_random",
        }
    )
    for record in records:
        while True:
            try:
                producer.produce(settings.topics.sink, record.value, record.key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("sink records not acknowledged within 60 s")


def throughput(settings: Settings, warehouse: Warehouse, expected: int) -> float:
    """Rows/s of one connector over the records on ``settings.topics.sink``."""
    sink = BatchingSink(settings, warehouse, f"{settings.app_id}-bench-{warehouse.name}")
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + 300
    try:
        while _written(sink) < expected:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{warehouse.name}: {_written(sink)} of {expected} rows")
            if first is None and _written(sink):
                first = (time.monotonic(), _written(sink))
            time.sleep(0.02)
        end = time.monotonic()
    finally:
        stop.set()
        thread.join(60)
    assert first is not None
    return (_written(sink) - first[1]) / (end - first[0])


def _written(sink: BatchingSink) -> int:
    counts = sink.counts
    return (
        counts.rows_written
        + counts.identities_written
        + counts.persons_written
        + counts.person_merges
    )


def _chunks(items: Iterator[InputRecord], size: int) -> Iterator[list[InputRecord]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
