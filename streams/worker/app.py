"""The Faust topology: topics, the state table, and the agents that wire them.

Topics, each declared once in ``create_app`` (partitions: ``topics.partitions``):

    input        topics.input               key: anything       value: a JSON event
    repartition  <app_id>-by-anonymous-id   key: anonymous id   value: the event, unchanged
    sink         topics.sink                key: event id       value: sink record
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
    persons      <app_id>-persons           key: a value        value: a message of the
                                            persons protocol (streams.core.persons;
                                            users_recognition.persons on)
    changelogs   <app_id>-stitch-state-changelog, <app_id>-identity-claims-changelog,
                 <app_id>-person-graph-changelog    (Faust's, of the tables)

Agents:

    route   input -> dead letters (undecodable), sink (no usable anonymous id: passed
            through), repartition (everything else, keyed by anonymous id so that all
            events of a visitor meet in one partition, with that partition's state)
    stitch  repartition -> sink: the rules of ``streams.core.rules`` against the partition's
            state in RocksDB (layout in ``streams.state.keys``), restored from the changelog by
            whichever worker is given the partition; control -> sink: erasures and
            un-merges of that state (``streams.core.control``); with the merge limit on,
            an identification that binds an anonymous id to a new identity also goes
            to claims, and a refusal on answers un-merges it
    arbitrate  claims -> answers, quarantine: how many anonymous ids each identity took
            within the window (table "identity-claims", streams.core.merges)
    persons persons -> persons, sink (the persons table's rows, merges), quarantine:
            each identity's values joined into one person (table "person-graph");
            stitch sends each anonymous id's new identity there

With ``topics.input_keyed_by_anonymous_id`` the input already is what the repartition
topic would be: there is no route agent, and stitch reads the input (its partitions are
the table's), dead-lettering an event whose key is not its anonymous id.

    e.g. {"eventn_ctx_event_id": "event3", "user": {"anonymous_id": "1", "email": "a@b.com"}}
    on input -> on sink: event3 v1 "identified", then event1 and event2 v2 "amended".

The agents take their records a fetch at a time (``streams.worker.transport``: feeds,
around Faust's per-record stream machinery); what they do with a batch is
``streams.worker.handlers``: a flow of ``streams.pipeline``, one librdkafka producer
(``streams.worker.outbox``), and a checkpoint in the order ``streams.worker.checkpoint``
states (output, then changelog, then RocksDB, then the input offsets). An agent that
raises stops the worker: its batch is not acknowledged, so the next worker reads it
again, where an agent restarted alone would go on past the batch it dropped.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from mode import CrashingSupervisor

from streams.core.control import Erasures
from streams.core.merges import answers_topic, claims_topic
from streams.core.persons import persons_topic
from streams.ops.counters import values
from streams.ops.logs import logging_config
from streams.ops.status import Heartbeat
from streams.settings import KafkaSettings, Settings
from streams.worker.checkpoint import Checkpoint
from streams.worker.feed import Batch
from streams.worker.gauges import sample
from streams.worker.handlers import Handlers, TopicNames
from streams.worker.metrics import LAST_IDENTIFICATION, WorkerMetrics
from streams.worker.outbox import Outbox
from streams.worker.transport import SCHEME, App

__all__ = ["create_app", "restored", "run"]

log = logging.getLogger(__name__)

_RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def create_app(
    settings: Settings,
    metrics: WorkerMetrics | None = None,
    heartbeat: Heartbeat | None = None,
    erasures: Erasures | None = None,
) -> faust.App:
    """The stitcher as a Faust app, wired from ``settings``.

    ``metrics`` collects what the agents did (counts logged every 30 s, all of it served on
    /metrics); ``heartbeat`` is beaten by the event loop every few seconds (/healthz);
    ``erasures``: those of the control topic before the worker starts (each new one joins).
    """
    metrics = WorkerMetrics() if metrics is None else metrics
    app = _app(settings)
    app.on_state_set_aside = metrics.counters.on_state_set_aside
    partitions = settings.topics.partitions
    app_id = settings.app_id
    names = TopicNames(
        sink=settings.topics.sink,
        dead_letter=settings.topics.dead_letter,
        control=settings.topics.control,
        quarantine=settings.topics.quarantine,
        repartition=f"{app_id}-by-anonymous-id",
        claims=claims_topic(app_id),
        answers=answers_topic(app_id),
        persons=persons_topic(app_id),
    )
    outbox = Outbox(settings.kafka)
    handlers = Handlers(settings, names, outbox, metrics, erasures)
    limited = handlers.limited

    # Keys and values are the raw bytes of streams.state; the agents write them themselves.
    table = app.Table("stitch-state", partitions=partitions, key_type=bytes, value_type=bytes)
    # the control (and answers) topic is read with the events: Faust gives a worker the
    # same partitions of each, and the stitch agent applies them to that state
    beside_events = (names.control, names.answers) if limited else (names.control,)
    if settings.topics.input_keyed_by_anonymous_id:
        stitch_source = app.topic(settings.topics.input, *beside_events, **_RAW)
    else:
        stitch_source = app.topic(
            names.repartition, *beside_events, partitions=partitions, internal=True, **_RAW
        )
        _agent(app, app.topic(settings.topics.input, **_RAW), "route", settings,
               handlers.route, Checkpoint(outbox))  # fmt: skip
    alone = bool(settings.kafka.inexact_end_offsets)  # the checkpoint says why
    _agent(app, stitch_source, "stitch", settings, handlers.stitch,
           Checkpoint(outbox, table, alone))  # fmt: skip
    tables: dict[str, Any] = {"stitch-state": table}
    read = {settings.topics.input, *stitch_source.topics}
    if limited:
        # the merge limit (streams.core.merges): claims keyed by identity, answered in order
        claims_table = app.Table(
            "identity-claims", partitions=partitions, key_type=bytes, value_type=bytes
        )
        claims_source = app.topic(names.claims, partitions=partitions, internal=True, **_RAW)
        _agent(app, claims_source, "arbitrate", settings, handlers.arbitrate,
               Checkpoint(outbox, claims_table, alone))  # fmt: skip
        tables["identity-claims"] = claims_table
        read.add(names.claims)
    if settings.persons.enabled:
        # persons (streams.core.persons): each value's node, in the partition of the value
        graph = app.Table("person-graph", partitions=partitions, key_type=bytes, value_type=bytes)
        persons_source = app.topic(names.persons, partitions=partitions, internal=True, **_RAW)
        _agent(app, persons_source, "persons", settings, handlers.persons,
               Checkpoint(outbox, graph, alone))  # fmt: skip
        tables["person-graph"] = graph
        read.add(names.persons)
    _timers(app, metrics, heartbeat, tables, frozenset(read))
    return app


def _app(settings: Settings) -> App:
    return App(
        settings.app_id,
        broker=";".join(
            f"{SCHEME}://{host}" for host in settings.kafka.bootstrap_servers.split(",")
        ),
        broker_credentials=_credentials(settings.kafka),
        store="retrostitch://",  # Faust's RocksDB store, compressed (streams.worker.tablestore)
        datadir=str(settings.state_dir / settings.app_id),  # a replay's app id starts empty
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        broker_session_timeout=settings.kafka.session_timeout,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval,
        broker_max_poll_interval=settings.kafka.max_poll_interval,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=settings.standby_replicas,
        producer_acks=-1,
        producer_max_batch_size=settings.kafka.producer_max_batch_bytes,
        web_enabled=False,
        autodiscover=False,
        # an agent that raises stops the worker (the module's docstring says why)
        agent_supervisor=CrashingSupervisor,
        # local state ahead of its changelog, or unreadable, is set aside and restored
        TableManager="streams.worker.recovery:TableManager",
    )


def _credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """The security of ``kafka.*`` for Faust's aiokafka clients, as ``client_config`` gives
    it to librdkafka: the same protocol, mechanism, user, CA and client certificate."""
    protocol = kafka.security_protocol
    context = None
    if protocol.tls:
        context = ssl.create_default_context(
            cafile=None if kafka.ssl_ca_location is None else str(kafka.ssl_ca_location)
        )
        if kafka.ssl_certificate_location is not None:
            context.load_cert_chain(
                str(kafka.ssl_certificate_location),
                None if kafka.ssl_key_location is None else str(kafka.ssl_key_location),
                None if kafka.ssl_key_password is None else kafka.ssl_key_password.reveal(),
            )
    if protocol.sasl:
        assert kafka.sasl_password is not None  # load_settings requires it
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.reveal(),
            ssl_context=context,
            mechanism=kafka.sasl_mechanism.value,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def _agent(
    app: App,
    source: faust.TopicT,
    name: str,
    settings: Settings,
    handle: Callable[[Batch, Checkpoint], Awaitable[None]],
    checkpoint: Checkpoint,
) -> None:
    """An agent on ``source`` that hands each batch of its feed (``batch_max_events`` at
    most) to ``handle(batch, checkpoint)``. Its feed exists before the consumer is built,
    which looks feeds up by topic."""
    feed = app.feed(source.topics, settings.batch_max_events)

    async def handled(batch: Batch) -> None:
        await handle(batch, checkpoint)

    async def agent(stream: faust.StreamT[bytes]) -> None:
        await feed.serve(handled)

    app.agent(source, name=name)(agent)


def _timers(
    app: App,
    metrics: WorkerMetrics,
    heartbeat: Heartbeat | None,
    tables: dict[str, Any],
    read: frozenset[str],
) -> None:
    async def report_counts() -> None:
        counts = {name: value for name, value in values(metrics.counters).items() if value}
        if counts:
            log.info("retrostitch counts: %s", dict(sorted(counts.items())))

    async def beat() -> None:
        if heartbeat is not None:
            heartbeat.beat()

    async def gauges() -> None:
        last = metrics.gauges.get(LAST_IDENTIFICATION)
        metrics.gauges = sample(app, tables, read, last)

    app.timer(interval=5.0)(gauges)
    app.timer(interval=30.0)(report_counts)
    app.timer(interval=5.0)(beat)


def run(app: faust.App, settings: Settings, ready: Callable[[], None]) -> None:
    """Run ``app`` as Faust's worker until SIGTERM or SIGINT, then exit the process;
    ``ready`` is called once the worker is built, before it starts."""
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        logging_config=logging_config(settings) if settings.log_format == "json" else None,
    )
    ready()
    worker.execute_from_commandline()


def restored(app: faust.App) -> bool:
    """Whether the worker holds its partitions and has restored their state."""
    tables: Any = app.tables
    return not app.rebalancing and bool(tables.recovery.completed.is_set())
