"""An isolated stitcher deployment on the real broker, for the integration tests."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from connectors.base import Warehouse
from connectors.postgres import PostgresSettings
from connectors.runner import BatchingSink
from streams.core.record import Status
from streams.dev.local import WorkerProcess
from streams.dev.reader import TopicReader
from streams.ops.topics import produce_events
from streams.settings import Settings, WarehouseSettings

# Tansu answers a group join after session.timeout/2: a short session keeps each join ~1.5 s.
FAST_GROUP = {"KAFKA_SESSION_TIMEOUT_SECONDS": "3", "KAFKA_HEARTBEAT_INTERVAL_SECONDS": "1"}


@dataclass
class Pipeline:
    """One isolated stitcher deployment: its own app id, topics and state directories."""

    bootstrap_servers: str
    env: dict[str, str]
    settings: Settings
    tmp: Path
    workers: list[WorkerProcess]

    def worker(self, state_dir: str = "state") -> WorkerProcess:
        env = {**self.env, "RETROSTITCH_STATE_DIR": str(self.tmp / state_dir)}
        worker = WorkerProcess(env, self.tmp / f"worker-{len(self.workers)}.log").start()
        self.workers.append(worker)
        return worker

    def produce(self, *lines: bytes, timestamp_ms: int = 0) -> None:
        produce_events(
            self.settings.kafka,
            self.settings.topics.input,
            lines,
            self.settings.recognition,
            timestamp_ms,
            self.settings.topics.input_format,
        )

    def reader(self, topic: str) -> TopicReader:
        return TopicReader(self.settings.kafka, topic)

    @property
    def changelog_topics(self) -> list[str]:
        """The changelogs of the worker's tables: stitch state, and the merge limit's."""
        app_id = self.settings.app_id
        return [f"{app_id}-stitch-state-changelog", f"{app_id}-identity-claims-changelog"]

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log_tail(60)}" for w in self.workers)


@contextmanager
def running_sink(settings: Settings, warehouse: Warehouse, group: str) -> Iterator[BatchingSink]:
    """A connector consuming the sink topic in a thread of this process, as ``retrostitch
    sink`` does in its own (chdb allows one process per directory, so the test reads the
    ClickHouse rows through the connector's own client)."""
    stop = threading.Event()
    # a group of this deployment's own: members of other tests' groups never meet it
    sink = BatchingSink(settings, warehouse, f"{settings.app_id}-{group}")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sink.run(stop)
        except BaseException as exc:  # reported by the test below, not lost in the thread
            errors.append(exc)
            raise

    thread = threading.Thread(target=run, name=f"sink-{group}", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        stop.set()
        thread.join(60)
    if errors:
        raise errors[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on this machine; (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def counter(port: int, name: str) -> float | None:
    """The counter ``retrostitch_<name>_total`` on the /metrics of ``port``, if served."""
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(f"retrostitch_{name}_total "):
            return float(line.split()[1])
    return None


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Wait until ``check()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s")
        time.sleep(0.2)


@contextmanager
def postgres_schema(settings: Settings, dsn: str, **warehouse: Any) -> Iterator[Settings]:
    """``settings`` writing Postgres into a schema of its own, dropped afterwards."""
    schema = f"rs_{uuid.uuid4().hex[:10]}"
    options = WarehouseSettings(**warehouse)
    try:
        yield replace(settings, warehouse=options).with_section(PostgresSettings(dsn, schema))
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def table_rows(
    settings: Settings, columns: str = "*", table_name: str | None = None
) -> list[tuple[Any, ...]]:
    """The connector's Postgres table (or ``table_name``), ordered by its first column; []
    before it exists."""
    name = settings.warehouse.table if table_name is None else table_name
    postgres = settings.section(PostgresSettings)
    table = sql.Identifier(postgres.schema, name)
    query = sql.SQL("SELECT {} FROM {} ORDER BY 1").format(sql.SQL(columns), table)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        try:
            return conn.execute(query).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
            return []  # the connector makes tables and columns as batches need them


NOT_EVENTS = frozenset({Status.IDENTITY, Status.PERSON, Status.PERSON_MERGE})


def sink_events(values: Iterable[bytes | None]) -> list[dict[str, Any]]:
    """The sink records of events among ``values`` (a sink topic's), decoded: identity
    records (the user mapping rows) and persons records left out."""
    decoded = (orjson.loads(value or b"") for value in values)
    return [record for record in decoded if record.get("status") not in NOT_EVENTS]


def identity_records(values: Iterable[bytes | None]) -> list[dict[str, Any]]:
    """The identity records among ``values``, decoded."""
    decoded = (orjson.loads(value or b"") for value in values)
    return [record for record in decoded if record.get("status") == Status.IDENTITY]
