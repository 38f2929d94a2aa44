"""The Faust topology: topics, the state table, and the agents that wire them.

Topics, each declared once in ``create_app`` (partitions: ``topics.partitions``):

    input        topics.input               key: anything       value: a JSON event
    repartition  <app_id>-by-anonymous-id   key: anonymous id   value: the event, unchanged
    sink         topics.sink                key: event id       value: sink record (README)
    dead letters topics.dead_letter         key, value: as received; headers
                                            retrostitch.reason, retrostitch.source
    control      topics.control             key: none           value: a command
                                            (streams.core.control), on every partition
    claims       <app_id>-claims            key: identity       value: claim, release,
                                            forget (streams.core.merges; merge limit on)
    answers      <app_id>-answers           key: anonymous id   value: confirm or refuse,
                                            on the partition the claim came from
    quarantine   topics.quarantine          key: anonymous id   value: the identifying
                                            event the merge limit refused; headers as
                                            dead letters
    changelogs   <app_id>-stitch-state-changelog, <app_id>-identity-claims-changelog
                                            (Faust's, of the tables)

Agents:

    route   input -> dead letters (undecodable), sink (no usable anonymous id: passed
            through), repartition (everything else, keyed by anonymous id so that all
            events of a visitor meet in one partition, with that partition's state)
    stitch  repartition -> sink: the rules of ``streams.core.rules`` against the partition's
            state in RocksDB (layout in ``streams.state.partition``), restored from the changelog by
            whichever worker is given the partition; control -> sink: erasures and
            un-merges of that state (``streams.core.control``); with the merge limit on,
            an identification that binds an anonymous id to a new identity also goes
            to claims, and a refusal on answers un-merges it
    arbitrate  claims -> answers, quarantine: how many anonymous ids each identity took
            within the window (table "identity-claims", streams.core.merges)

With ``topics.input_keyed_by_anonymous_id`` the input already is what the repartition
topic would be: there is no route agent, and stitch reads the input (its partitions are
the table's), dead-lettering an event whose key is not its anonymous id.

    e.g. {"eventn_ctx_event_id": "event3", "user": {"anonymous_id": "1", "email": "a@b.com"}}
    on input -> on sink: event3 v1 "identified", then event1 and event2 v2 "amended".

The agents take their records a fetch at a time (``streams.worker.transport``: feeds, around
Faust's per-record stream machinery), write to Kafka through one librdkafka producer
(``streams.worker.outbox``), and checkpoint each batch in the order ``streams.worker.checkpoint``
states: output, then changelog, then RocksDB, then the input offsets. An agent that raises
stops the worker (its batch is not acknowledged, so the next worker reads it again):
restarting the agent alone would go on past the batch it dropped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import faust
from mode import CrashingSupervisor

from streams.core.merges import (
    Claim,
    ClaimState,
    Forget,
    Release,
    answers_topic,
    claims_topic,
    encode,
)
from streams.core.rules import SinkRecord
from streams.ops.status import Heartbeat, Histogram, labelled
from streams.settings import Settings
from streams.state.partition import PartitionState
from streams.worker.checkpoint import Checkpoint
from streams.worker.outbox import Headers, Outbox
from streams.worker.processor import (
    DeadLetter,
    InputRecord,
    answers,
    arbitrate,
    control,
    route,
    stitch,
)
from streams.worker.transport import (
    SCHEME,
    App,
    Batch,
    Feed,
    partition_dbs,
    read_offset,
)

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
    app = App(
        settings.app_id,
        broker=";".join(
            f"{SCHEME}://{host}" for host in settings.kafka.bootstrap_servers.split(",")
        ),
        store="retrostitch://",  # Faust's RocksDB store, compressed (streams.worker.tablestore)
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
        # an agent that raises stops the worker (the module's docstring says why)
        agent_supervisor=CrashingSupervisor,
    )

    input_topic = app.topic(settings.topics.input, **_RAW)
    # Keys and values are the raw bytes of streams.state.partition; the agent writes them itself.
    table = app.Table("stitch-state", partitions=partitions, key_type=bytes, value_type=bytes)
    sink_topic, dead_letter_topic = settings.topics.sink, settings.topics.dead_letter
    outbox = Outbox(settings.kafka)

    def emit(sink: Iterable[SinkRecord], dead: Iterable[DeadLetter]) -> None:
        outbox.send_many(sink_topic, [(record.key, record.value) for record in sink])
        for letter in dead:
            headers = _why(letter.reason, letter.record.source)
            outbox.send(dead_letter_topic, letter.record.key, letter.record.value, None, headers)

    keyed = settings.topics.input_keyed_by_anonymous_id
    control_topic = settings.topics.control
    limit = settings.merges
    limited = limit.max_anonymous_ids is not None
    rules = replace(rules, claims=limited)
    claims_name, answers_name = claims_topic(settings.app_id), answers_topic(settings.app_id)
    # the control (and answers) topic is read with the events: Faust gives a worker the
    # same partitions of each, and the stitch agent applies them to that state
    beside_events = (control_topic, answers_name) if limited else (control_topic,)
    if keyed:
        stitch_source = app.topic(settings.topics.input, *beside_events, **_RAW)
    else:
        by_anonymous_id = app.topic(
            f"{settings.app_id}-by-anonymous-id", partitions=partitions, internal=True, **_RAW
        )
        stitch_source = app.topic(
            by_anonymous_id.get_topic_name(),
            *beside_events,
            partitions=partitions,
            internal=True,
            **_RAW,
        )

        route_feed = _feed(app, input_topic, settings)
        routed_checkpoint = Checkpoint(outbox)
        forward_topic = by_anonymous_id.get_topic_name()

        @app.agent(input_topic, name="route")
        async def route_agent(stream: faust.StreamT[bytes]) -> None:
            await route_feed.serve(_route)

        async def _route(batch: Batch) -> None:
            routed = route(_all(batch), rules, counts)
            for forward in routed.forward:
                outbox.send(forward_topic, forward.key, forward.value, timestamp=forward.timestamp)
            emit(routed.sink, routed.dead)
            await routed_checkpoint(batch)

    def claim(messages: Iterable[Claim | Release | Forget]) -> None:
        for message in messages:
            stamp = message.timestamp if isinstance(message, Claim) else 0
            outbox.send(claims_name, message.identity.encode(), encode(message), timestamp=stamp)

    stitch_feed = _feed(app, stitch_source, settings)
    checkpoint = Checkpoint(outbox, table)

    @app.agent(stitch_source, name="stitch")
    async def stitch_agent(stream: faust.StreamT[bytes]) -> None:
        await stitch_feed.serve(_stitch)

    async def _stitch(batch: Batch) -> None:
        started = time.perf_counter()
        identified = counts["identified"]
        done = []
        clock_ms = int(time.time() * 1000)
        for partition, records in batch.by_partition().items():
            store = checkpoint.store(partition)
            state = PartitionState(store, settings.retention)
            by_topic = _by_topic(records, control_topic, answers_name)
            result = stitch(by_topic[""], state, rules, counts, keyed=keyed, clock_ms=clock_ms)
            # after the events (their changes are pending in `state`): answers, commands
            for more in (
                answers(by_topic[answers_name], state, counts),
                control(by_topic[control_topic], state, counts, merge_limit=limited),
            ):
                result.sink += more.sink
                result.dead += more.dead
                result.claims += more.claims
                result.changes = more.changes
            done.append((partition, store, result))
        for _, _, result in done:
            emit(result.sink, result.dead)
            claim(result.claims)
        await checkpoint(batch, [(p, store, result.changes) for p, store, result in done])
        metrics.batch_seconds.observe(time.perf_counter() - started)
        counts["emitted"] += sum(len(result.sink) for _, _, result in done)
        if counts["identified"] != identified:
            metrics.gauges[LAST_IDENTIFICATION] = time.time()

    if limited:
        # the merge limit (streams.core.merges): claims keyed by identity, answered in order
        claims_table = app.Table(
            "identity-claims", partitions=partitions, key_type=bytes, value_type=bytes
        )
        claims_source = app.topic(claims_name, partitions=partitions, internal=True, **_RAW)
        quarantine_topic = settings.topics.quarantine
        claims_feed = _feed(app, claims_source, settings)
        claims_checkpoint = Checkpoint(outbox, claims_table)

        @app.agent(claims_source, name="arbitrate")
        async def arbitrate_agent(stream: faust.StreamT[bytes]) -> None:
            await claims_feed.serve(_arbitrate)

        async def _arbitrate(batch: Batch) -> None:
            done = []
            clock_ms = int(time.time() * 1000)
            for partition, records in batch.by_partition().items():
                store = claims_checkpoint.store(partition)
                state = ClaimState(store, limit)
                result = arbitrate(records, state, limit, counts, clock_ms=clock_ms)
                done.append((partition, store, result))
            for _, _, result in done:
                for to, answer in result.answers:
                    outbox.send(answers_name, answer.anonymous_id.encode(), encode(answer), to)
                for refused in result.quarantine:
                    headers = _why(refused.reason, refused.claim.source)
                    key = refused.claim.anonymous_id.encode()
                    outbox.send(quarantine_topic, key, refused.claim.event, None, headers)
                emit((), result.dead)
            await claims_checkpoint(batch, [(p, s, r.changes) for p, s, r in done])

    async def report_counts() -> None:
        if counts:
            log.info("retrostitch counts: %s", dict(sorted(counts.items())))

    async def beat() -> None:
        if heartbeat is not None:
            heartbeat.beat()

    claims_read = (claims_name,) if limited else ()
    streams = frozenset({settings.topics.input, *stitch_source.topics, *claims_read})
    tables = {"stitch-state": table, **({"identity-claims": claims_table} if limited else {})}

    async def sample() -> None:
        last = metrics.gauges.get(LAST_IDENTIFICATION)
        metrics.gauges = _sampled(app, tables, streams, last)

    app.timer(interval=5.0)(sample)
    app.timer(interval=30.0)(report_counts)
    app.timer(interval=5.0)(beat)
    return app


LAST_IDENTIFICATION = "last_identification_timestamp_seconds"


def _sampled(
    app: faust.App,
    tables: dict[str, Any],
    streams: frozenset[str],
    last_identification: float | None,
) -> dict[str, float]:
    """Lag of each partition of ``streams`` this worker reads, and the size of each
    partition of ``tables`` it holds (active or standby), as labelled gauges."""
    gauges: dict[str, float] = {}
    consumer: Any = app.consumer
    for tp in consumer.assignment():
        if tp.topic not in streams:
            continue
        highwater, read = consumer.highwater(tp), read_offset(app, tp)
        if highwater is not None:
            lag = highwater - (read + 1 if read is not None else 0)
            gauges[labelled("consumer_lag", topic=tp.topic, partition=tp.partition)] = max(lag, 0)
    for name, table in tables.items():
        for partition, db in sorted(partition_dbs(table).items()):
            keys = db.property_int_value("rocksdb.estimate-num-keys") or 0
            size = sum(
                db.property_int_value(prop) or 0
                for prop in ("rocksdb.total-sst-files-size", "rocksdb.size-all-mem-tables")
            )
            gauges[labelled("state_keys", table=name, partition=partition)] = keys
            gauges[labelled("state_bytes", table=name, partition=partition)] = size
    if last_identification is not None:
        gauges[LAST_IDENTIFICATION] = last_identification
    return gauges


def _why(reason: str, source: str) -> Headers:
    """The headers of a dead letter or a quarantined record: why, and where it came from."""
    return [(HEADER_REASON, reason.encode()), (HEADER_SOURCE, source.encode())]


def _feed(app: App, source: faust.TopicT, settings: Settings) -> Feed:
    """The feed of the records of ``source``'s topics, in batches of ``batch_max_events``."""
    return app.feed(source.topics, settings.batch_max_events)


def _all(batch: Batch) -> list[InputRecord]:
    return [record for records in batch.records.values() for record in records]


def restored(app: faust.App) -> bool:
    """Whether the worker holds its partitions and has restored their state."""
    tables: Any = app.tables
    return not app.rebalancing and bool(tables.recovery.completed.is_set())


def _by_topic(records: Iterable[InputRecord], *topics: str) -> dict[str, list[InputRecord]]:
    """Records of ``topics`` under their names, the others under ""; each in order."""
    groups: dict[str, list[InputRecord]] = {name: [] for name in ("", *topics)}
    for record in records:
        groups[record.topic if record.topic in groups else ""].append(record)
    return groups
