"""``retrostitch demo`` (``make run``): the whole job on the embedded defaults.

Starts the local broker, a worker, and both connectors (ClickHouse in-process through
chdb; Postgres where one answers at ``RETROSTITCH_POSTGRES_DSN``), feeds the sample stream
(the seed's example, a second visitor, and her phone, where she clicked a newsletter link
with her email), and prints the warehouse tables before and after the visitors identify
themselves (with persons on, the phone's rows join her person), the user mapping tables
after, then the dead letters. ``--snowplow``: the same with enriched TSV lines (a shared
browser, an app install) read with Snowplow's settings (``streams.dev.snowplow``).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from clickhouse_connect.driver.exceptions import DatabaseError
from psycopg import sql

from connectors.base import Warehouse, identities_layout
from connectors.clickhouse import ClickHouseSettings
from connectors.clickhouse.warehouse import ClickHouseWarehouse
from connectors.postgres import PostgresSettings
from connectors.postgres.warehouse import PostgresWarehouse
from connectors.runner import BatchingSink
from streams.dev.broker import LocalBroker
from streams.dev.local import (
    WorkerProcess,
    expected_mappings,
    expected_persons,
    expected_versions,
)
from streams.dev.reader import TopicReader
from streams.dev.snowplow import ENVIRONMENT, demo_stream
from streams.ops.topics import ensure_topics, produce_events
from streams.settings import Settings

__all__ = ["run_demo"]

_SAMPLES = resources.files("streams.dev") / "samples"
_SCHEMA = "retrostitch_demo"
#: rows of a warehouse table: (columns, the user mapping table?) -> rows
Reader = Callable[[str, bool], list[tuple[Any, ...]]]


def run_demo(settings: Settings, config: Path | None = None, *, snowplow: bool = False) -> int:
    """``retrostitch demo``: the local broker, a worker and both connectors on the
    embedded defaults; the sample stream before and after its identification, as rows.
    ``snowplow``: Snowplow's flavour, enriched TSV lines read with ``snowplow.ENVIRONMENT``
    (which ``settings`` must already hold; the worker is given it too)."""
    logging.getLogger("connectors").setLevel(logging.ERROR)
    if snowplow:
        before, identify = demo_stream()
    else:
        before = (_SAMPLES / "before.jsonl").read_bytes().splitlines()
        identify = (_SAMPLES / "identify.jsonl").read_bytes().splitlines()
    input_format = settings.topics.input_format
    with ExitStack() as stack:
        broker = stack.enter_context(LocalBroker())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="retrostitch-demo-")))
        print(f"local broker on {broker.bootstrap_servers}; work files in {tmp}")
        settings = (
            replace(
                settings,
                kafka=replace(settings.kafka, bootstrap_servers=broker.bootstrap_servers),
                warehouse=replace(settings.warehouse, batch_max_seconds=0.2),
            )
            .with_section(
                replace(settings.section(ClickHouseSettings), url=f"chdb://{tmp / 'clickhouse'}")
            )
            .with_section(replace(settings.section(PostgresSettings), schema=_SCHEMA))
        )
        ensure_topics(settings)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "RETROSTITCH_STATE_DIR": str(tmp / "state"),
            "KAFKA_SESSION_TIMEOUT_SECONDS": "3",
            "KAFKA_HEARTBEAT_INTERVAL_SECONDS": "1",
            "RETROSTITCH_STATUS_PORT": "0",
            **(ENVIRONMENT if snowplow else {}),
        }
        worker = stack.enter_context(WorkerProcess(env, tmp / "worker.log", config))
        readers = _start_connectors(settings, stack)
        header, columns = _columns(settings)
        persons = settings.persons.enabled
        fed: list[bytes] = []
        for title, lines in (("before", before), ("after", identify)):
            produce_events(
                settings.kafka,
                settings.topics.input,
                lines,
                settings.recognition,
                input_format=input_format,
            )
            fed += lines
            expected = expected_versions(fed, settings.recognition, input_format)
            people = (
                expected_persons(fed, settings.recognition, settings.persons, input_format)
                if persons
                else {}
            )
            for name, (_, read) in readers.items():
                rows = _wait_for(partial(read, columns, False), expected, worker, people)
                print(f"\n{name}, {title} identification:")
                _print_table(header, rows)
        mapped = expected_mappings(fed, settings.recognition, input_format)
        mapping = _mapping_columns(settings)
        for mapping_table, read in readers.values():
            rows = _wait_for(partial(read, mapping, True), dict.fromkeys(mapped, 1), worker)
            print(f"\n{mapping_table}, the user mapping table:")
            _print_table(mapping.split(", "), rows)
        _print_dead_letters(settings)
    return 0


def _start_connectors(settings: Settings, stack: ExitStack) -> dict[str, tuple[str, Reader]]:
    """Per events table's name: the mapping table's name, and the reader of both."""
    readers: dict[str, tuple[str, Reader]] = {}
    clickhouse = ClickHouseWarehouse(settings)
    stack.enter_context(_sink_thread(settings, clickhouse, "clickhouse"))
    mapping_view = clickhouse.beside(identities_layout(settings)).latest_view

    def read_clickhouse(cols: str, identities: bool) -> list[tuple[Any, ...]]:
        view = mapping_view if identities else clickhouse.latest_view
        try:
            return [tuple(row) for row in clickhouse.query(f"SELECT {cols} FROM {view} ORDER BY 1")]
        except DatabaseError as exc:
            if "UNKNOWN_TABLE" in str(exc):
                return []  # not made yet: no identity record has come
            raise

    readers[f"ClickHouse {clickhouse.latest_view}"] = (
        f"ClickHouse {mapping_view}",
        read_clickhouse,
    )
    dsn = settings.section(PostgresSettings).dsn
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(_SCHEMA))
            )
    except psycopg.OperationalError as exc:
        print(f"(no Postgres answered, so only ClickHouse is shown: {str(exc).splitlines()[0]})")
        return readers
    stack.enter_context(_sink_thread(settings, PostgresWarehouse(settings), "postgres"))
    tables = {
        False: sql.Identifier(_SCHEMA, settings.warehouse.table),
        True: sql.Identifier(_SCHEMA, identities_layout(settings).table),
    }

    def read_postgres(cols: str, identities: bool) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            try:
                query = sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                    sql.SQL(cols), tables[identities]
                )
                return conn.execute(query).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    mapping_table = f"Postgres {_SCHEMA}.{identities_layout(settings).table}"
    readers[f"Postgres {_SCHEMA}.{settings.warehouse.table}"] = (mapping_table, read_postgres)
    return readers


@contextmanager
def _sink_thread(settings: Settings, warehouse: Warehouse, name: str) -> Iterator[None]:
    stop = threading.Event()
    sink = BatchingSink(settings, warehouse, f"{settings.app_id}-demo-{name}")
    thread = threading.Thread(target=sink.run, args=(stop,), name=f"sink-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


#: a person's id as the demo shows it: its first 8 hex digits (in every warehouse's SQL)
PERSON = "substring(person_id, 1, 8)"


def _columns(settings: Settings) -> tuple[list[str], str]:
    """The events table's columns the demo shows: their names, and the SQL list."""
    nodes = [p.column for p in settings.recognition.identification]
    person = ["person"] if settings.persons.enabled else []
    header = ["event_id", "anonymous_id", *nodes, "stitched_user_id", *person, "version", "status"]
    selected = [PERSON if name == "person" else name for name in header]
    return header, ", ".join(selected)


def _mapping_columns(settings: Settings) -> str:
    nodes = ", ".join(p.column for p in settings.recognition.identification)
    return f"anonymous_id, {nodes}, stitched_user_id, first_seen, last_identified, version, status"


def _wait_for(
    read: Callable[[], list[tuple[Any, ...]]],
    expected: dict[str, int],
    worker: WorkerProcess,
    persons: dict[str, str] | None = None,
) -> list[tuple[Any, ...]]:
    """The rows once each key (the first column) has at least its expected version (the
    column before last) and, with ``persons``, its expected person (the one before)."""
    deadline = time.monotonic() + 90
    while True:
        rows = read()
        versions = {row[0]: row[-2] for row in rows}
        people = {row[0]: row[-3] for row in rows} if persons else {}
        if all(versions.get(event_id, 0) >= v for event_id, v in expected.items()) and all(
            people.get(event_id) == person[:8] for event_id, person in (persons or {}).items()
        ):
            return rows
        if not worker.running:
            raise RuntimeError(f"the worker stopped:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the warehouse did not show {expected} within 90 s")
        time.sleep(0.2)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in [list(header), *cells]) for i in range(len(header))]
    for row in [list(header), ["-" * w for w in widths], *cells]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _print_dead_letters(settings: Settings) -> None:
    dead = TopicReader(settings.kafka, settings.topics.dead_letter)
    dead.poll(1.0)
    print(f"\nDead letters on {settings.topics.dead_letter}:")
    for message in dead.messages:
        reason = message.headers.get("retrostitch.reason", b"").decode()
        source = message.headers.get("retrostitch.source", b"").decode()
        print(f"  {source}: {reason}\n    {message.value!r}")
    dead.close()


def _cell(value: object) -> str:
    return "" if value is None else str(value)
