"""The MySQL / MariaDB connector against the real server (MariaDB here): what the Postgres
connector guarantees, guaranteed again."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pymysql
import pytest
from confluent_kafka import Producer

from connectors.mysql import MySQLSettings
from connectors.mysql.warehouse import MySQLWarehouse, connection_options, quoted
from connectors.rows import column_name
from streams.core.record import ERASED_VERSION, HEADER_REASON
from streams.dev.reader import TopicReader
from streams.settings import Settings
from tests.integration.harness import Pipeline, counter, eventually, free_port, running_sink


def _rows(settings: Settings, columns: str) -> list[tuple[Any, ...]]:
    options = connection_options(settings.section(MySQLSettings).dsn)
    with pymysql.connect(**options, charset="utf8mb4") as conn, conn.cursor() as cursor:
        try:
            cursor.execute(f"SELECT {columns} FROM {quoted(settings.warehouse.table)} ORDER BY 1")
        except pymysql.err.ProgrammingError:
            return []  # no table yet
        except pymysql.err.OperationalError as exc:
            if exc.args[0] == 1054:  # no such column yet
                return []
            raise
        return [tuple(row) for row in cursor.fetchall()]


def _send(settings: Settings, *records: dict[str, Any]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for record in records:
        key = str(record.get("event_id", "erase")).encode()
        producer.produce(settings.topics.sink, key=key, value=orjson.dumps(record))
    assert producer.flush(10) == 0


def _record(
    event_id: str, version: int, email: str | None = None, anonymous_id: str = "1", **fields: Any
) -> dict[str, Any]:
    user: dict[str, Any] = {"anonymous_id": anonymous_id}
    if email is not None:
        user["email"] = email
    return {
        "event_id": event_id, "anonymous_id": anonymous_id,
        "stitched_user_id": email or anonymous_id, "version": version,
        "status": "amended" if version > 1 else "anonymous",
        "event": {"eventn_ctx_event_id": event_id, "user": user, **fields},
    }  # fmt: skip


@pytest.mark.parametrize("local_infile", [True, False], ids=["load-data", "insert-values"])
def test_the_highest_version_wins_whatever_the_order_and_erasures_delete(
    mysql_settings: Settings, local_infile: bool
) -> None:
    settings = mysql_settings
    erased = {**_record("e3", ERASED_VERSION), "status": "erased", "event": {}}
    _send(
        settings,
        _record("e1", 2, "a@b.com"), _record("e1", 1),  # the older one arrives last
        _record("e2", 1), _record("e3", 1), erased,
        _record("g1", 1, anonymous_id="gone"), _record("g2", 2, anonymous_id="gone"),
    )  # fmt: skip
    _send(settings, {"status": "erase", "anonymous_id": "gone", "version": ERASED_VERSION})
    with running_sink(settings, MySQLWarehouse(settings, local_infile=local_infile), "mysql"):
        expected = [("e1", 2, "a@b.com", "amended"), ("e2", 1, "1", "anonymous")]
        columns = "event_id, version, stitched_user_id, status"
        eventually(lambda: _rows(settings, columns) == expected, 60, "mysql rows")
        _send(settings, _record("e1", 2, "a@b.com"), _record("e1", 1))  # a replay: no change
        _send(settings, _record("e2", 3, "c@d.com"))
        expected[1] = ("e2", 3, "c@d.com", "amended")
        eventually(lambda: _rows(settings, columns) == expected, 60, "the newer e2")
    assert _rows(settings, "user_email") == [("a@b.com",), ("c@d.com",)]


def test_new_fields_get_columns_a_conflict_becomes_text_and_a_refused_row_is_a_dead_letter(
    mysql_settings: Settings,
) -> None:
    settings = mysql_settings
    too_long = secrets.token_hex(500)  # a key of 1,000 characters: over VARCHAR(768)
    _send(settings, _record("e1", 1, page={"n": 1}), _record(too_long, 1))
    _send(settings, _record("e2", 1, page={"n": "seven"}, cart={"vip": True}))
    letters = TopicReader(settings.kafka, settings.warehouse.dead_letter_topic)
    with running_sink(settings, MySQLWarehouse(settings), "mysql") as sink:
        eventually(lambda: len(_rows(settings, "event_id")) == 2, 60, "both good rows")
        letters.wait_for(lambda m: len(m) == 1, 30)
        assert sink.counts.dead_lettered == 1
    assert _rows(settings, "event_id, page_n, cart_vip") == [("e1", "1", None), ("e2", "seven", 1)]
    (letter,) = letters.messages
    assert orjson.loads(letter.value or b"")["event_id"] == too_long
    assert b"mysql refused the row" in letter.headers[HEADER_REASON]


def test_hostile_field_names_get_columns_of_their_own_and_stay_data(
    mysql_settings: Settings,
) -> None:
    settings = replace(
        mysql_settings, warehouse=replace(mysql_settings.warehouse, table="ev`il; DROP--")
    )
    hostile = {
        "a.b": "dotted",
        "nul\x00name": "nul",
        "`tick` \"quote\" 'apos'": "quoted",
        "x" * 10_000: "long",
        "p" * 63 + "A": "first",
        "p" * 63 + "B": "second",
        "v": "a\x00b",  # MySQL text holds a NUL
    }
    _send(settings, _record("'); DROP TABLE events; --", 1, **hostile))
    with running_sink(settings, MySQLWarehouse(settings), "mysql"):
        eventually(lambda: len(_rows(settings, "event_id")) == 1, 60, "the row")
    made = [column_name((field,)) for field in hostile]
    assert len(set(made)) == len(hostile)
    values = _rows(settings, ", ".join(quoted(name) for name in made))
    assert list(values[0]) == list(hostile.values())


def test_sink_mysql_command_serves_metrics_and_stops_on_sigterm(
    mysql_settings: Settings, pipeline: Pipeline, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, **pipeline.env}
    env |= {"RETROSTITCH_MYSQL_DSN": mysql_settings.section(MySQLSettings).dsn}
    env |= {"RETROSTITCH_STATUS_PORT": str(port)}
    _send(mysql_settings, _record("e1", 1))
    command = [sys.executable, "-m", "streams.cli", "sink", "mysql"]
    log = tmp_path / "sink.log"
    with log.open("wb") as out, subprocess.Popen(command, env=env, stdout=out, stderr=out) as sink:
        try:
            eventually(lambda: len(_rows(mysql_settings, "event_id")) == 1, 60, "the row")
            eventually(lambda: counter(port, "sink_rows_written") == 1, 30, "counted")
        finally:
            sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=30) == 0, log.read_text()
    assert "Disconnected" not in log.read_text()
