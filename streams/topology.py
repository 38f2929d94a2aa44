"""The Faust topology: topics, the state table, and the agents that wire them.

Topics, each declared once in ``create_app`` (partitions: ``topics.partitions``):

    input        topics.input               key: anything       value: a JSON event
    repartition  <app_id>-by-anonymous-id   key: anonymous id   value: the event, unchanged
    sink         topics.sink                key: event id       value: sink record (README)
    dead letters topics.dead_letter         key, value: as received; headers
                                            retrostitch.reason, retrostitch.source
    control      topics.control             key: none           value: a command
                                            (streams.control), on every partition
    changelog    <app_id>-stitch-state-changelog (Faust's, of the table "stitch-state")

Agents:

    route   input -> dead letters (undecodable), sink (no usable anonymous id: passed
            through), repartition (everything else, keyed by anonymous id so that all
            events of a visitor meet in one partition, with that partition's state)
    stitch  repartition -> sink: the rules of ``streams.rules`` against the partition's
            state in RocksDB (layout in ``streams.state``), restored from the changelog by
            whichever worker is given the partition; and control -> sink: erasures and
            un-merges of that state (``streams.control``)

With ``topics.input_keyed_by_anonymous_id`` the input already is what the repartition
topic would be: there is no route agent, and stitch reads the input (its partitions are
the table's), dead-lettering an event whose key is not its anonymous id.

    e.g. {"eventn_ctx_event_id": "event3", "user": {"anonymous_id": "1", "email": "a@b.com"}}
    on input -> on sink: event3 v1 "identified", then event1 and event2 v2 "amended".

Both agents take batches from their stream and write to Kafka through one librdkafka
producer (``streams.outbox``); Faust consumes through ``streams.transport``, its aiokafka
transport with batched delivery. Each stitch batch is checkpointed in this
order, so that a crash anywhere loses nothing and re-processing changes nothing:

    1. emit the sink and dead-letter records, and wait for the broker's acks;
    2. send the state changes to the changelog, and wait for the acks;
    3. write the changes and the changelog offset to the partition's RocksDB in one batch;
    4. return: Faust acks the batch's input offsets and commits them.

A crash before 3 leaves state as it was: the batch is read again and emits the very same
records (versions are deterministic). A crash after 3 re-reads events already marked as
seen: they emit nothing. A Faust table write needs a current event, which a batch does not
have; so the stitch agent writes the table's RocksDB and changelog itself, in the format
Faust restores from (raw bytes keys and values, the changelog offset under Faust's key).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from rocksdict import Rdict

from streams.outbox import Headers, Outbox
from streams.processor import DeadLetter, InputRecord, control, route, stitch
from streams.rules import SinkRecord
from streams.settings import Settings
from streams.state import PartitionState
from streams.status import Heartbeat, Histogram, labelled
from streams.store import Change, RocksStore
from streams.transport import SCHEME

__all__ = ["HEADER_REASON", "HEADER_SOURCE", "WorkerMetrics", "create_app", "restored"]

log = logging.getLogger(__name__)

HEADER_REASON = "retrostitch.reason"
HEADER_SOURCE = "retrostitch.source"
_RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


@dataclass
class WorkerMetrics:
    """What a worker serves on /metrics; the event loop keeps it up to date."""

    #: what the agents did, by what (README: metrics)
    counts: Counter[str] = field(default_factory=Counter)
    #: sampled every 5 s: consumer lag and state size per partition, last identification
    gauges: dict[str, float] = field(default_factory=dict)
    #: seconds from a stitch batch's first record in hand to its state written
    batch_seconds: Histogram = field(default_factory=lambda: Histogram("batch_seconds"))


def create_app(
    settings: Settings, metrics: WorkerMetrics | None = None, heartbeat: Heartbeat | None = None
) -> faust.App:
    """The stitcher as a Faust app, wired from ``settings``.

    ``metrics`` collects what the agents did (counts logged every 30 s, all of it served on
    /metrics); ``heartbeat`` is beaten by the event loop every few seconds (/healthz).
    """
    metrics = WorkerMetrics() if metrics is None else metrics
    counts = metrics.counts
    rules = settings.recognition
    partitions = settings.topics.partitions
    app = faust.App(
        settings.app_id,
        broker=";".join(
            f"{SCHEME}://{host}" for host in settings.kafka.bootstrap_servers.split(",")
        ),
        store="rocksdb://",
        datadir=str(settings.state_dir / settings.app_id),  # a replay's app id starts empty
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        broker_session_timeout=settings.kafka.session_timeout,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=settings.standby_replicas,
        producer_acks=-1,
        producer_max_batch_size=settings.kafka.producer_max_batch_bytes,
        web_enabled=False,
        autodiscover=False,
    )

    input_topic = app.topic(settings.topics.input, **_RAW)
    # Keys and values are the raw bytes of streams.state; the agent writes them itself.
    table = app.Table("stitch-state", partitions=partitions, key_type=bytes, value_type=bytes)
    sink_topic, dead_letter_topic = settings.topics.sink, settings.topics.dead_letter
    outbox = Outbox(settings.kafka)

    def emit(sink: Iterable[SinkRecord], dead: Iterable[DeadLetter]) -> None:
        for record in sink:
            outbox.send(sink_topic, record.key, record.value)
        for letter in dead:
            headers: Headers = [
                (HEADER_REASON, letter.reason.encode()),
                (HEADER_SOURCE, letter.record.source.encode()),
            ]
            outbox.send(dead_letter_topic, letter.record.key, letter.record.value, None, headers)

    keyed = settings.topics.input_keyed_by_anonymous_id
    control_topic = settings.topics.control
    if keyed:
        # the control topic is read with the input: Faust gives a worker the same
        # partitions of both, and the stitch agent applies commands to that state
        stitch_source = app.topic(settings.topics.input, control_topic, **_RAW)
    else:
        by_anonymous_id = app.topic(
            f"{settings.app_id}-by-anonymous-id", partitions=partitions, internal=True, **_RAW
        )
        stitch_source = app.topic(
            by_anonymous_id.get_topic_name(),
            control_topic,
            partitions=partitions,
            internal=True,
            **_RAW,
        )

        @app.agent(input_topic, name="route")
        async def route_agent(stream: faust.StreamT[bytes]) -> None:
            forward_topic = by_anonymous_id.get_topic_name()
            async for events in _batches(stream, settings):
                routed = route(_records(events), rules, counts)
                for forward in routed.forward:
                    outbox.send(
                        forward_topic, forward.key, forward.value, timestamp=forward.timestamp
                    )
                emit(routed.sink, routed.dead)
                await outbox.flush()

    @app.agent(stitch_source, name="stitch")
    async def stitch_agent(stream: faust.StreamT[bytes]) -> None:
        changelog = table.changelog_topic.get_topic_name()
        async for events in _batches(stream, settings):
            started = time.perf_counter()
            identified = counts["identified"]
            done = []
            clock_ms = int(time.time() * 1000)
            for partition, records in _by_partition(_records(events)).items():
                store = RocksStore(_partition_db(table, partition))
                state = PartitionState(store, settings.retention)
                commands = [r for r in records if r.topic == control_topic]
                records = [r for r in records if r.topic != control_topic]
                result = stitch(records, state, rules, counts, keyed=keyed, clock_ms=clock_ms)
                if commands:  # after the events: their state changes are pending in `state`
                    done_commands = control(commands, state, counts)
                    result.sink += done_commands.sink
                    result.dead += done_commands.dead
                    result.changes = done_commands.changes
                done.append((partition, store, result))
            # 1. sink and dead letters first: state never runs ahead of what was emitted
            for _, _, result in done:
                emit(result.sink, result.dead)
            await outbox.flush()
            # 2. the changelog, so any worker can restore this partition
            for partition, _, result in done:
                for key, value in result.changes:
                    outbox.send(changelog, key, value, partition, track=True)
            await outbox.flush()
            # 3. local state and the changelog offset it reflects, in one write per partition
            for partition, store, result in done:
                if result.changes:
                    offset = outbox.acked[changelog, partition]
                    store.write([*result.changes, _offset_change(table, offset)])
            metrics.batch_seconds.observe(time.perf_counter() - started)
            counts["emitted"] += sum(len(result.sink) for _, _, result in done)
            if counts["identified"] != identified:
                metrics.gauges[LAST_IDENTIFICATION] = time.time()
            # 4. returning acks the batch; Faust commits the offsets

    async def report_counts() -> None:
        if counts:
            log.info("retrostitch counts: %s", dict(sorted(counts.items())))

    async def beat() -> None:
        if heartbeat is not None:
            heartbeat.beat()

    streams = frozenset({settings.topics.input, *stitch_source.topics})

    async def sample() -> None:
        last = metrics.gauges.get(LAST_IDENTIFICATION)
        metrics.gauges = _sampled(app, table, streams, last)

    app.timer(interval=5.0)(sample)
    app.timer(interval=30.0)(report_counts)
    app.timer(interval=5.0)(beat)
    return app


LAST_IDENTIFICATION = "last_identification_timestamp_seconds"


def _sampled(
    app: faust.App, table: Any, streams: frozenset[str], last_identification: float | None
) -> dict[str, float]:
    """Lag of each partition of ``streams`` this worker reads, and the size of each
    partition's state it holds (active or standby), as labelled gauges."""
    gauges: dict[str, float] = {}
    consumer: Any = app.consumer
    for tp in consumer.assignment():
        if tp.topic not in streams:
            continue
        highwater, read = consumer.highwater(tp), consumer._read_offset.get(tp)
        if highwater is not None:
            lag = highwater - (read + 1 if read is not None else 0)
            gauges[labelled("consumer_lag", topic=tp.topic, partition=tp.partition)] = max(lag, 0)
    for partition, db in sorted(table.data._dbs.items()):
        keys = db.property_int_value("rocksdb.estimate-num-keys") or 0
        size = sum(
            db.property_int_value(name) or 0
            for name in ("rocksdb.total-sst-files-size", "rocksdb.size-all-mem-tables")
        )
        gauges[labelled("state_keys", partition=partition)] = keys
        gauges[labelled("state_bytes", partition=partition)] = size
    if last_identification is not None:
        gauges[LAST_IDENTIFICATION] = last_identification
    return gauges


def _batches(stream: faust.StreamT[bytes], settings: Settings) -> AsyncIterator[Sequence[Any]]:
    """Events in batches of up to ``batch_max_events``, or whatever came within the wait."""
    batches: AsyncIterator[Sequence[Any]] = cast(faust.Stream[bytes], stream).take_events(
        settings.batch_max_events, settings.batch_max_wait
    )
    return batches


def _partition_db(table: Any, partition: int) -> Rdict:
    """The RocksDB database that Faust's table keeps (and restores) for one partition."""
    db: Rdict = table.data._db_for_partition(partition)
    return db


def restored(app: faust.App) -> bool:
    """Whether the worker holds its partitions and has restored their state."""
    tables: Any = app.tables
    return not app.rebalancing and bool(tables.recovery.completed.is_set())


def _offset_change(table: Any, offset: int) -> Change:
    """Faust's record of the changelog offset that a partition's RocksDB has applied."""
    return (table.data.offset_key, str(offset).encode())


def _records(events: Sequence[Any]) -> list[InputRecord]:
    return [
        InputRecord(
            topic=e.message.topic,
            partition=e.message.partition,
            offset=e.message.offset,
            key=e.message.key,
            value=e.message.value,
            timestamp=int(e.message.timestamp * 1000) if e.message.timestamp else 0,
        )
        for e in events
    ]


def _by_partition(records: Iterable[InputRecord]) -> dict[int, list[InputRecord]]:
    groups: dict[int, list[InputRecord]] = {}
    for record in records:
        groups.setdefault(record.partition, []).append(record)
    return groups
