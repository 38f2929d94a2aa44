"""The ``retrostitch`` command: worker, sink, replay, broker, produce, demo.

Every command reads its settings once (``--config FILE`` and the environment, which wins)
and passes them down; see ``streams.settings`` for every key.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import logging.config
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from connectors.base import Warehouse
from connectors.registry import SECTIONS, WAREHOUSES, named
from streams.core.errors import ConfigError, RetrostitchError
from streams.ops.logs import logging_config
from streams.ops.status import DEFAULT_PORTS, Heartbeat, StatusServer, port_of
from streams.settings import Settings, load_settings

__all__ = ["build_parser", "main", "tune_gc_for_streaming"]


def tune_gc_for_streaming() -> None:
    """Garbage collection for a process that moves millions of short-lived objects.

    With CPython's defaults a full collection walks every live object (Faust's, the
    clients', the caches) again and again, a fifth of a busy worker's or connector's time.
    Here the objects made while starting are frozen out of collection, and young ones are
    collected in larger, rarer rounds.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _status_server(default: int, settings: Settings) -> StatusServer | None:
    """The process's status port (``default``: its kind's), taken first: a port in use
    stops it before anything."""
    port = port_of(default, settings.status_port)
    return StatusServer(port) if port else None


def _worker(settings: Settings, _: argparse.Namespace) -> int:
    status = _status_server(DEFAULT_PORTS["worker"], settings)
    return _run_worker(settings, status, _reached(settings))


def _reached(settings: Settings) -> str:
    """The brokers reached (their cluster id) and the topics made where missing: what a
    worker, and a replay before it sets its start, does first."""
    from streams.ops.reach import reach
    from streams.ops.topics import ensure_topics

    cluster = reach(settings.kafka)
    created = ensure_topics(settings)
    if created:
        logging.getLogger("retrostitch").info("created topics %s", ", ".join(created))
    return cluster


def _run_worker(settings: Settings, status: StatusServer | None, cluster: str) -> int:
    from streams.dev.broker import local_defaults
    from streams.ops.counters import values
    from streams.ops.topics import erasures_so_far
    from streams.worker.app import create_app, restored, run
    from streams.worker.metrics import WorkerMetrics

    settings = local_defaults(settings, cluster)
    if settings.kafka.inexact_end_offsets:
        logging.getLogger("retrostitch").info(
            "kafka.inexact_end_offsets: each changelog write ends with a batch of one record"
        )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    metrics = WorkerMetrics()
    heartbeat = Heartbeat()
    # every erasure so far, before any event: a replay never emits what was erased
    app = create_app(settings, metrics, heartbeat, erasures_so_far(settings))
    if status is not None:
        status.start(
            live=heartbeat.fresh,
            ready=lambda: heartbeat.fresh() and restored(app),
            counters=lambda: values(metrics.counters),
            gauges=lambda: metrics.gauges,
            histograms=lambda: [metrics.batch_seconds, metrics.amend_seconds],
        )
    run(app, settings, ready=tune_gc_for_streaming)  # until SIGTERM/SIGINT, then exits
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from streams.ops.replay import parse_start, set_start, start_progress

    start = parse_start(args.from_offset, args.from_timestamp)
    if args.app_id == settings.app_id:
        raise ConfigError(f"replay needs a new app id, not the live one ({settings.app_id!r})")
    settings = replace(settings, app_id=args.app_id)
    status = _status_server(DEFAULT_PORTS["replay"], settings)
    cluster = _reached(settings)
    start_progress(settings, set_start(settings, start))
    return _run_worker(settings, status, cluster)


def _broker(_: Settings, args: argparse.Namespace) -> int:
    from streams.dev.broker import LocalBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalBroker(port=args.port) as broker:
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        print(
            f"local broker (memory only) running; log: {broker.log_path}; Ctrl-C stops it",
            file=sys.stderr,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def _produce(settings: Settings, args: argparse.Namespace) -> int:
    from streams.ops.reach import reach
    from streams.ops.topics import produce_events

    topic = args.topic or settings.topics.input
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"produce: no file {path} (a JSON-lines file, one event per line)")
    reach(settings.kafka)
    with path.open("rb") as lines:
        sent = produce_events(
            settings.kafka,
            topic,
            lines,
            settings.recognition,
            input_format=settings.topics.input_format,
        )
    print(f"sent {sent} records to {topic}", file=sys.stderr)
    return 0


def _sink(settings: Settings, args: argparse.Namespace) -> int:
    from connectors.errors import WarehouseUnavailable
    from connectors.runner import BatchingSink
    from streams.ops.reach import reach
    from streams.ops.topics import ensure_topics

    kind = named(args.warehouse)
    status = _status_server(kind.status_port, settings)
    reach(settings.kafka)
    ensure_topics(settings)
    try:
        warehouse = kind.connect(settings)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"retrostitch sink {kind.name} needs {kind.driver}, which is not installed"
            f" ({exc.name}): pip install 'retrostitch[{kind.name}]'"
        ) from None
    log = logging.getLogger("retrostitch")
    try:
        warehouse.open()
    except WarehouseUnavailable as exc:
        log.warning(
            "%s is unavailable at start (%s): the first batch waits for it", warehouse.where, exc
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    group = f"{settings.app_id}-sink-{args.warehouse}"
    sink = BatchingSink(settings, warehouse, group)
    answer = _answers(warehouse, settings)
    log.info(
        "connector: reads %s (group %s) on %s, writes %s",
        settings.topics.sink, group, settings.kafka.bootstrap_servers, warehouse.where,
    )  # fmt: skip
    if status is not None:
        status.start(
            live=sink.heartbeat.fresh,
            ready=lambda: sink.heartbeat.fresh() and sink.assigned,
            counters=sink.counters,
            gauges=lambda: sink.gauges,
            histograms=lambda: [sink.write_seconds],
            query=answer,
        )
    tune_gc_for_streaming()
    sink.run(stop)
    return 0


def _answers(warehouse: Warehouse, settings: Settings) -> Callable[[str], tuple[int, str]] | None:
    """For ``retrostitch query``: the embedded ClickHouse's connector answers statements
    on its status port (chdb lets one process open the directory: this one)."""
    from connectors.base import Answers
    from connectors.clickhouse import ClickHouseSettings

    embedded = settings.section(ClickHouseSettings).url.startswith("chdb://")
    if not isinstance(warehouse, Answers) or not embedded:
        return None

    def answered(statement: str) -> tuple[int, str]:
        try:
            return 200, warehouse.answer(statement)
        except ValueError as exc:
            return 400, f"{exc}\n"

    return answered


def _query(settings: Settings, args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from connectors.clickhouse import WAREHOUSE as CLICKHOUSE
    from connectors.clickhouse import ClickHouseSettings

    url = settings.section(ClickHouseSettings).url
    port = port_of(CLICKHOUSE.status_port, settings.status_port)
    if url.startswith("chdb://") and port:  # a running connector holds the directory
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/query", data=args.statement.encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                sys.stdout.write(response.read().decode())
            return 0
        except urllib.error.HTTPError as exc:
            print(f"retrostitch: query: {exc.read().decode().strip()}", file=sys.stderr)
            return 2
        except OSError:
            pass  # no connector there: the directory is this process's to open
    try:
        from connectors.clickhouse.warehouse import ClickHouseWarehouse
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"retrostitch query needs {CLICKHOUSE.driver}, which is not installed ({exc.name}):"
            " pip install 'retrostitch[clickhouse]'"
        ) from None
    warehouse = ClickHouseWarehouse(settings)
    try:
        sys.stdout.write(warehouse.answer(args.statement))
    except ValueError as exc:
        print(f"retrostitch: query: {exc}", file=sys.stderr)
        return 2
    finally:
        warehouse.close()
    return 0


def _command(settings: Settings, args: argparse.Namespace) -> int:
    from streams.core.control import Command, Verb
    from streams.ops.reach import reach
    from streams.ops.topics import send_command

    verb = Verb(args.command)
    command = Command(verb, args.anonymous_id, getattr(args, "identity", None))
    reach(settings.kafka)
    partitions = send_command(settings, command)
    target = (
        f"anonymous id {args.anonymous_id!r}"
        if args.anonymous_id is not None
        else f"identity {args.identity!r}"
    )
    print(
        f"{verb.value} of {target} sent to the {partitions} partitions of "
        f"{settings.topics.control}; the workers apply it with their next batch",
        file=sys.stderr,
    )
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    import time
    import urllib.request

    from connectors.runner import SHOWN as CONNECTOR
    from streams.ops.summary import parse_metrics, summary
    from streams.worker.metrics import SHOWN as WORKER

    # without URLs: the configured port, else every kind's default port that answers
    defaults = [*DEFAULT_PORTS.values(), *(kind.status_port for kind in WAREHOUSES)]
    ports = [settings.status_port] if settings.status_port else sorted(defaults)
    urls = args.url or [f"http://127.0.0.1:{port}" for port in ports]
    failed = 0
    for url in urls:
        endpoint = url.rstrip("/") + "/metrics"
        try:
            with urllib.request.urlopen(endpoint, timeout=10) as response:
                text = response.read().decode()
        except OSError as exc:
            if args.url or len(urls) == 1:
                print(f"{url}: no answer from {endpoint} ({exc})", file=sys.stderr)
            failed += 1
            continue
        print(summary(url, parse_metrics(text), time.time(), (WORKER, CONNECTOR)))
    if failed == len(urls) > 1:
        print(
            f"no answer on {', '.join(urls)}: is a worker or a connector running?", file=sys.stderr
        )
    return 1 if failed == len(urls) or (args.url and failed) else 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from streams.dev.demo import run_demo
    from streams.dev.snowplow import ENVIRONMENT

    if args.snowplow:  # Snowplow's settings over the file's and the environment's
        settings = load_settings(args.config, {**os.environ, **ENVIRONMENT}, SECTIONS)
    return run_demo(settings, args.config, snowplow=args.snowplow)


#: every command's help ends with where its settings come from
SETTINGS_HELP = """\
settings: a YAML file (--config FILE, before or after the command) and environment
variables, which win; e.g. KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL,
RETROSTITCH_INPUT_TOPIC, RETROSTITCH_POSTGRES_DSN. Every key and variable, with its
default: docs/configuration.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrostitch",
        description="Retroactive user recognition on Kafka.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, help="YAML settings file (environment variables win)"
    )
    # each command takes --config too (after its name), and shows where settings come from
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="YAML settings file (environment variables win)",
    )
    commands = _Commands(
        parser.add_subparsers(dest="command", required=True),
        parents=[settings],
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser("worker", help="run the stitcher (a Faust worker)").set_defaults(
        run=_worker
    )
    replay = commands.add_parser(
        "replay", help="reprocess the input topic into fresh state under a new app id (backfill)"
    )
    replay.add_argument("--app-id", required=True, help="a new app id: new group, topics, state")
    replay.add_argument("--from-offset", type=int, help="start every partition at this offset")
    replay.add_argument("--from-timestamp", help="start at this time (ISO 8601, with zone)")
    replay.set_defaults(run=_replay)
    broker = commands.add_parser(
        "broker", help="run a local in-memory broker and print its address"
    )
    broker.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    broker.set_defaults(run=_broker)
    produce = commands.add_parser("produce", help="send a JSON-lines file, keyed by anonymous id")
    produce.add_argument("file", help="one JSON event per line")
    produce.add_argument("--topic", help="topic (default: the input topic)")
    produce.set_defaults(run=_produce)
    sink = commands.add_parser(
        "sink", help="write the sink topic to a warehouse (a consumer group)"
    )
    sink.add_argument("warehouse", choices=[kind.name for kind in WAREHOUSES])
    sink.set_defaults(run=_sink)
    erase = commands.add_parser(
        "erase", help="forget an anonymous id (or every one identified so) and delete its rows"
    )
    target = erase.add_mutually_exclusive_group(required=True)
    target.add_argument("--anonymous-id", help="the anonymous id to erase")
    target.add_argument("--identity", help="an identification value (user id, email)")
    erase.set_defaults(run=_command)
    unmerge = commands.add_parser(
        "unmerge", help="undo an identification: events it amended go back to anonymous"
    )
    unmerge.add_argument("--anonymous-id", required=True, help="the anonymous id to un-merge")
    unmerge.set_defaults(run=_command)
    status = commands.add_parser(
        "status", help="running workers' and connectors' counts and lag, for a person"
    )
    status.add_argument(
        "url",
        nargs="*",
        help="status endpoints (default: stitcher.status_port, else each kind's default port)",
    )
    status.set_defaults(run=_status)
    query = commands.add_parser(
        "query",
        help="read the ClickHouse warehouse (the embedded one through its running connector)",
    )
    query.add_argument("statement", help='one read-only statement, e.g. "SELECT * FROM events"')
    query.set_defaults(run=_query)
    demo = commands.add_parser(
        "demo", help="local broker + worker + the sample stream, printed before and after"
    )
    demo.add_argument(
        "--snowplow",
        action="store_true",
        help="Snowplow's flavour: enriched TSV lines, its user identifier, latest user id wins",
    )
    demo.set_defaults(run=_demo)
    return parser


class _Commands:
    """``add_subparsers()`` whose every command is made with the same ``options``."""

    def __init__(self, action: Any, **options: Any) -> None:
        self._action = action
        self._options = options

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._action.add_parser(name, **self._options, **kwargs)
        return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, sections=SECTIONS)
        logging.config.dictConfig(logging_config(settings))
        code: int = args.run(settings, args)
    except RetrostitchError as exc:
        print(f"retrostitch: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
