"""The warehouse connectors against the real broker, a real PostgreSQL server and the real
ClickHouse engine (chdb): what an analyst queries, however records arrive."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson
import psycopg
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import Producer
from psycopg import sql
from psycopg.conninfo import make_conninfo

from connectors.clickhouse.warehouse import ClickHouseWarehouse
from connectors.postgres import PostgresSettings
from connectors.postgres.warehouse import PostgresWarehouse
from connectors.rows import column_name
from streams.core.control import Command, Verb
from streams.dev.reader import TopicReader
from streams.ops.topics import send_command
from streams.settings import Settings
from tests.integration.harness import (
    Pipeline,
    eventually,
    running_sink,
    table_rows,
)
from tests.integration.worker.test_stitcher import SEED


def _ch_rows(
    clickhouse: ClickHouseWarehouse, columns: str, view: str | None = None
) -> list[tuple[Any, ...]]:
    view = clickhouse.latest_view if view is None else view
    try:
        rows = clickhouse.query(f"SELECT {columns} FROM {view} ORDER BY 1")
    except DatabaseError as exc:
        if "UNKNOWN_IDENTIFIER" in str(exc) or "UNKNOWN_TABLE" in str(exc):
            return []  # the column, or the table, is not there yet
        raise
    return [tuple(row) for row in rows]


IDENTITIES = "events_identities"
MAPPING = "anonymous_id, status, user_email, stitched_user_id"


def _mapping_rows(settings: Settings) -> list[tuple[Any, ...]]:
    """The Postgres user mapping table."""
    return table_rows(settings, MAPPING, f"{settings.warehouse.table}_identities")


def _ch_mapping_rows(clickhouse: ClickHouseWarehouse) -> list[tuple[Any, ...]]:
    return _ch_rows(clickhouse, MAPPING, f"`default`.`{IDENTITIES}_latest`")


def _send(settings: Settings, *records: dict[str, Any]) -> None:
    """Sink records as the stitcher writes them (key: event id)."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for record in records:
        producer.produce(
            settings.topics.sink, key=record["event_id"].encode(), value=orjson.dumps(record)
        )
    assert producer.flush(10) == 0


def _record(event_id: str, version: int, email: str | None = None, **fields: Any) -> dict[str, Any]:
    user: dict[str, Any] = {"anonymous_id": "1"}
    if email is not None:
        user["email"] = email
    event = {"eventn_ctx_event_id": event_id, "user": user, **fields}
    return {
        "event_id": event_id, "anonymous_id": "1", "stitched_user_id": email or "1",
        "version": version, "status": "amended" if version > 1 else "anonymous", "event": event,
    }  # fmt: skip


@contextmanager
def _both_sinks(settings: Settings) -> Iterator[ClickHouseWarehouse]:
    """Both connectors running; yields the ClickHouse one, to read rows."""
    clickhouse = ClickHouseWarehouse(settings)
    with (
        running_sink(settings, PostgresWarehouse(settings), "pg"),
        running_sink(settings, clickhouse, "ch"),
    ):
        yield clickhouse


@contextmanager
def _worker_and_both_sinks(pipeline: Pipeline, settings: Settings) -> Iterator[ClickHouseWarehouse]:
    """A worker, and both connectors running; yields the ClickHouse one, to read rows."""
    pipeline.worker()
    with _both_sinks(settings) as clickhouse:
        yield clickhouse


def test_erase_deletes_the_rows_and_unmerge_restores_the_anonymous_ones(
    pipeline: Pipeline, warehouse_settings: Settings
) -> None:
    columns = "event_id, status, user_email, stitched_user_id"
    with _worker_and_both_sinks(pipeline, warehouse_settings) as clickhouse:
        pipeline.produce(*SEED)
        pipeline.produce(_seed_like("other", "2", "p@x.com"))
        # rows the stitcher no longer remembers (older than its TTL, or without an
        # anonymous id): straight onto the sink topic
        old = _record("zz-old", 1)  # visitor 1's
        passed = {**_record("zz-pass", 1, "p@x.com"), "anonymous_id": None, "status": "passthrough"}
        _send(warehouse_settings, old, passed)
        eventually(lambda: len(table_rows(warehouse_settings, columns)) == 7, 90, "postgres")
        mapped = [
            ("1", "identified", "a@b.com", "a@b.com"),
            ("2", "identified", "p@x.com", "p@x.com"),
        ]
        eventually(lambda: _mapping_rows(warehouse_settings) == mapped, 30, "postgres mapping")
        eventually(lambda: _ch_mapping_rows(clickhouse) == mapped, 30, "clickhouse mapping")
        # un-merge visitor 1: its amended events go back to anonymous, its own ids stay
        _cli(pipeline, "unmerge", "--anonymous-id", "1")
        unmerged = [
            ("event1", "unmerged", None, "1"),
            ("event2", "unmerged", None, "1"),
            ("event3", "identified", "a@b.com", "a@b.com"),
            ("event4", "identified", "a@b.com", "a@b.com"),
        ]
        rows = lambda: [r for r in table_rows(warehouse_settings, columns) if r[0] != "other-1"]  # noqa: E731
        eventually(lambda: rows()[:4] == unmerged, 60, "postgres after the un-merge")
        eventually(lambda: _ch_rows(clickhouse, columns)[:4] == unmerged, 30, "clickhouse too")
        # and its mapping row is anonymous again
        mapped[0] = ("1", "anonymous", None, "1")
        eventually(lambda: _mapping_rows(warehouse_settings) == mapped, 30, "postgres mapping")
        eventually(lambda: _ch_mapping_rows(clickhouse) == mapped, 30, "clickhouse mapping")

        # erase visitor 1 by its anonymous id: its rows go (the old one too), visitor 2's stay
        send_command(warehouse_settings, Command(Verb.ERASE, anonymous_id="1"))
        left = [
            ("other-1", "identified", "p@x.com", "p@x.com"),
            ("zz-pass", "passthrough", "p@x.com", "p@x.com"),
        ]
        eventually(lambda: table_rows(warehouse_settings, columns) == left, 60, "postgres")
        eventually(lambda: _ch_rows(clickhouse, columns) == left, 30, "clickhouse _latest view")
        eventually(lambda: _mapping_rows(warehouse_settings) == mapped[1:], 30, "pg mapping")
        eventually(lambda: _ch_mapping_rows(clickhouse) == mapped[1:], 30, "ch mapping")
        # and visitor 2 by the email it identified with
        _cli(pipeline, "erase", "--identity", "p@x.com")
        eventually(lambda: table_rows(warehouse_settings, columns) == [], 60, "postgres")
        eventually(lambda: _ch_rows(clickhouse, columns) == [], 30, "clickhouse _latest view")
        eventually(lambda: _mapping_rows(warehouse_settings) == [], 30, "postgres mapping")
        eventually(lambda: _ch_mapping_rows(clickhouse) == [], 30, "clickhouse mapping")
        # nor does any version of them remain for a reader that skips the view
        raw = clickhouse.query(f"SELECT count() FROM {clickhouse.table} WHERE is_deleted = 0")
        assert raw[0][0] == 0
    clickhouse.close()


def _cli(pipeline: Pipeline, *arguments: str) -> None:
    """``retrostitch …`` as an operator runs it, against the pipeline's topics."""
    env = {**os.environ, **pipeline.env}
    command = [sys.executable, "-m", "streams.cli", *arguments]
    done = subprocess.run(command, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    partitions = pipeline.settings.topics.partitions
    assert f"sent to the {partitions} partitions of {pipeline.settings.topics.control}" in (
        done.stderr.decode()
    )


def _seed_like(event_id: str, anonymous_id: str, email: str) -> bytes:
    user = {"anonymous_id": anonymous_id, "email": email}
    return orjson.dumps({"eventn_ctx_event_id": f"{event_id}-1", "user": user})


SEED_AFTER = [(f"event{i}", "1", "a@b.com", "a@b.com") for i in range(1, 5)]


def test_the_seed_example_lands_as_the_seeds_after_table(
    pipeline: Pipeline, warehouse_settings: Settings
) -> None:
    columns = "event_id, anonymous_id, user_email, stitched_user_id"
    with _worker_and_both_sinks(pipeline, warehouse_settings) as clickhouse:
        pipeline.produce(*SEED)
        eventually(lambda: table_rows(warehouse_settings, columns) == SEED_AFTER, 90, "postgres")
        eventually(lambda: _ch_rows(clickhouse, columns) == SEED_AFTER, 30, "clickhouse")
        assert table_rows(warehouse_settings, "event_id, version") == [
            ("event1", 2), ("event2", 2), ("event3", 1), ("event4", 1),
        ]  # fmt: skip
        assert _ch_rows(clickhouse, "event_id, version") == table_rows(
            warehouse_settings, "event_id, version"
        )
        # Snowplow's user mapping table: one row for the visitor, identified at event3
        mapping = [("1", "identified", "a@b.com", "a@b.com")]
        eventually(lambda: _mapping_rows(warehouse_settings) == mapping, 30, "postgres mapping")
        eventually(lambda: _ch_mapping_rows(clickhouse) == mapping, 30, "clickhouse mapping")
        times = "first_seen <= first_identified, first_identified = last_identified"
        assert table_rows(
            warehouse_settings, times, f"{warehouse_settings.warehouse.table}_identities"
        ) == [(True, True)]


def test_older_versions_never_win_and_a_replay_changes_no_row(warehouse_settings: Settings) -> None:
    _send(
        warehouse_settings,
        _record("e1", 2, "a@b.com"), _record("e1", 1),
        _record("e2", 1), _record("e2", 3, "c@d.com"), _record("e2", 2, "b@c.com"),
    )  # fmt: skip
    expected = [("e1", 2, "a@b.com"), ("e2", 3, "c@d.com")]
    columns = "event_id, version, user_email"
    clickhouse = ClickHouseWarehouse(warehouse_settings)
    with (
        running_sink(warehouse_settings, PostgresWarehouse(warehouse_settings), "pg-live"),
        running_sink(warehouse_settings, clickhouse, "ch-live"),
    ):
        eventually(lambda: table_rows(warehouse_settings, columns) == expected, 60, "postgres")
        eventually(lambda: _ch_rows(clickhouse, columns) == expected, 30, "clickhouse")
    pg_before = table_rows(warehouse_settings, "*")
    clickhouse = ClickHouseWarehouse(warehouse_settings)
    ch_before = _ch_rows(clickhouse, "*")
    # replay: new consumer groups read the whole sink topic again from offset 0
    with (
        running_sink(warehouse_settings, PostgresWarehouse(warehouse_settings), "pg-replay") as pg,
        running_sink(warehouse_settings, clickhouse, "ch-replay") as ch,
    ):
        eventually(
            lambda: pg.counts.rows_written == 5 and ch.counts.rows_written == 5, 60, "replay read"
        )
    assert table_rows(warehouse_settings, "*") == pg_before
    clickhouse = ClickHouseWarehouse(warehouse_settings)
    assert _ch_rows(clickhouse, "*") == ch_before
    clickhouse.close()


def test_new_fields_get_columns_and_a_type_conflict_keeps_the_record(
    warehouse_settings: Settings,
) -> None:
    _send(warehouse_settings, _record("e1", 1, page={"n": 1}))
    with _both_sinks(warehouse_settings) as clickhouse:
        eventually(lambda: len(table_rows(warehouse_settings, "event_id")) == 1, 60, "first row")
        eventually(lambda: len(_ch_rows(clickhouse, "event_id")) == 1, 30, "first row")
        _send(
            warehouse_settings,
            _record("e2", 1, page={"n": "seven"}, cart={"items": [1, 2], "vip": True}),
        )
        columns = "event_id, page_n, cart_items, cart_vip"
        expected = [("e1", "1", None, None), ("e2", "seven", "[1,2]", True)]
        eventually(lambda: table_rows(warehouse_settings, columns) == expected, 60, "postgres")
        eventually(lambda: _ch_rows(clickhouse, columns) == expected, 30, "clickhouse")


def test_injection_attempts_are_stored_as_data(warehouse_settings: Settings) -> None:
    evil_name = 'x"; DROP TABLE events; --`'
    evil_value = "'); DROP TABLE events; --"
    settings = replace(
        warehouse_settings,
        warehouse=replace(warehouse_settings.warehouse, table='ev"il`table; --'),
    )
    _send(settings, _record(evil_value, 1, **{evil_name: evil_value}))
    with _both_sinks(settings) as clickhouse:
        name = "x___drop_table_events_____"  # the evil field, flattened
        eventually(lambda: len(table_rows(settings, "event_id")) == 1, 60, "postgres")
        eventually(lambda: len(_ch_rows(clickhouse, "event_id")) == 1, 30, "clickhouse")
        assert table_rows(settings, f'event_id, "{name}"') == [(evil_value, evil_value)]
        assert _ch_rows(clickhouse, f"event_id, `{name}`") == [(evil_value, evil_value)]
        assert table_rows(settings, "payload->>'eventn_ctx_event_id'") == [(evil_value,)]


def test_a_record_postgres_refuses_is_dead_lettered_and_the_rest_lands(
    warehouse_settings: Settings,
) -> None:
    too_long = secrets.token_hex(8_000)  # over the size of a btree index row: refused
    _send(
        warehouse_settings,
        _record("ok-1", 1), _record(too_long, 1), _record("ok-2", 1),
    )  # fmt: skip
    dead = TopicReader(warehouse_settings.kafka, warehouse_settings.warehouse.dead_letter_topic)
    with running_sink(warehouse_settings, PostgresWarehouse(warehouse_settings), "pg"):
        eventually(
            lambda: table_rows(warehouse_settings, "event_id") == [("ok-1",), ("ok-2",)], 60, "rows"
        )
        messages = dead.wait_for(lambda m: len(m) >= 1, timeout=30)
    assert orjson.loads(messages[0].value or b"")["event_id"] == too_long
    assert "postgres refused the row" in messages[0].headers["retrostitch.reason"].decode()
    assert (
        messages[0]
        .headers["retrostitch.source"]
        .decode()
        .startswith(warehouse_settings.topics.sink)
    )
    dead.close()


@pytest.fixture
def outage_database(postgres_dsn: str) -> Iterator[tuple[str, str]]:
    """A database of its own, whose connections the test may cut: (name, dsn)."""
    name = f"rs_outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name, make_conninfo(postgres_dsn, dbname=name)
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def _postgres_away(postgres_dsn: str, name: str) -> Iterator[Callable[[], None]]:
    """Database ``name`` refuses connections and its sessions are cut, until the yielded
    function (or the end of the block) lets them in again."""
    database = sql.Identifier(name)
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(database))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )

        def back() -> None:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(database))

        try:
            yield back
        finally:
            back()


def test_postgres_away_longer_than_the_poll_interval_loses_and_duplicates_nothing(
    warehouse_settings: Settings, postgres_dsn: str, outage_database: tuple[str, str]
) -> None:
    name, dsn = outage_database
    settings = replace(
        warehouse_settings,
        kafka=replace(warehouse_settings.kafka, max_poll_interval=4.0),
    ).with_section(replace(warehouse_settings.section(PostgresSettings), dsn=dsn))
    _send(settings, *(_record(f"e{i:03}", 1) for i in range(50)))
    with running_sink(settings, PostgresWarehouse(settings), "pg") as sink:
        eventually(lambda: len(table_rows(settings, "event_id")) == 50, 60, "first half")
        with _postgres_away(postgres_dsn, name) as back:
            _send(settings, *(_record(f"e{i:03}", 2, "a@b.com") for i in range(25, 100)))
            outage = time.monotonic()
            eventually(lambda: sink.counts.warehouse_unavailable >= 1, 30, "the outage seen")
            assert sink.counts.rows_written == 50  # nothing written, nothing committed meanwhile
            # three poll intervals without the warehouse: a consumer that stopped polling
            # would have left the group by now
            eventually(lambda: time.monotonic() - outage > 12, 20, "a long outage")
            assert sink.assigned
            back()
        expected = [(f"e{i:03}", 1 if i < 25 else 2) for i in range(100)]
        eventually(
            lambda: table_rows(settings, "event_id, version") == expected, 90, "after recovery"
        )
        assert sink.assignments == 1  # no rebalance: it kept its place in the group
        assert sink.counts.records_read == 125  # nothing read twice
    assert table_rows(settings, "count(*), count(DISTINCT event_id)") == [(100, 100)]


def test_a_rebalance_while_postgres_is_away_loses_and_duplicates_nothing(
    warehouse_settings: Settings, postgres_dsn: str, outage_database: tuple[str, str]
) -> None:
    """A second connector joins while the first waits for the warehouse: the first drops
    its batch uncommitted when the group takes partitions away, and reads again what it
    polled of the partitions it was given meanwhile."""
    name, dsn = outage_database
    settings = warehouse_settings.with_section(
        replace(warehouse_settings.section(PostgresSettings), dsn=dsn)
    )
    _send(settings, *(_record(f"e{i:03}", 1) for i in range(50)))
    with running_sink(settings, PostgresWarehouse(settings), "pg") as first:
        eventually(lambda: len(table_rows(settings, "event_id")) == 50, 60, "first half")
        with _postgres_away(postgres_dsn, name) as back:
            _send(settings, *(_record(f"e{i:03}", 2, "a@b.com") for i in range(25, 100)))
            eventually(lambda: first.counts.warehouse_unavailable >= 1, 30, "the outage seen")
            with running_sink(settings, PostgresWarehouse(settings), "pg") as second:
                eventually(lambda: first.assignments >= 2 and second.assigned, 30, "rebalanced")
                back()
                expected = [(f"e{i:03}", 1 if i < 25 else 2) for i in range(100)]
                eventually(
                    lambda: table_rows(settings, "event_id, version") == expected, 90, "all rows"
                )
    assert table_rows(settings, "count(*), count(DISTINCT event_id)") == [(100, 100)]


def test_hostile_field_names_get_columns_of_their_own_and_stay_data(
    warehouse_settings: Settings,
) -> None:
    settings = warehouse_settings
    twin_a, twin_b = "p" * 63 + "A", "p" * 63 + "B"  # Postgres would cut both to 63 bytes
    hostile = {
        "a.b": "dotted",
        "nul\x00name": "nul",
        "`tick` \"quote\" 'apos'": "quoted",
        "x" * 10_000: "long",
        twin_a: "first",
        twin_b: "second",
    }
    _send(settings, _record("hostile", 1, **hostile), _record("nul-value", 1, v="a\x00b"))
    with _both_sinks(settings) as clickhouse:
        eventually(lambda: len(table_rows(settings, "event_id")) == 2, 60, "postgres")
        eventually(lambda: len(_ch_rows(clickhouse, "event_id")) == 2, 30, "clickhouse")
    # a NUL: ClickHouse keeps it; Postgres text and jsonb cannot hold one, U+FFFD stands in
    assert _ch_rows(clickhouse, "event_id, v") == [("hostile", None), ("nul-value", "a\x00b")]
    assert table_rows(settings, "event_id, v") == [("hostile", None), ("nul-value", "a\ufffdb")]
    postgres = settings.section(PostgresSettings)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        columns = {
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (postgres.schema, settings.warehouse.table),
            )
        }
    assert len(columns) == len(set(columns))
    assert all(len(name) <= 63 for name in columns)
    made = {column_name((field,)) for field in hostile}
    assert len(made) == len(hostile)  # six fields, six columns: none shares one silently
    assert made <= columns
    values = table_rows(settings, ", ".join(f'"{name}"' for name in sorted(made)))
    assert sorted(values[0]) == sorted(hostile.values())
    ch_values = _ch_rows(clickhouse, ", ".join(f"`{name}`" for name in sorted(made)))
    clickhouse.close()  # chdb opens one directory per process: the next test's may differ
    assert sorted(v for v in ch_values[0]) == sorted(hostile.values())
