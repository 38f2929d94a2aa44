"""Replay for backfill: fresh state under a new app id converges to the live run's rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

import psycopg
import pytest
from psycopg import sql

from connectors.base import Rejected
from connectors.postgres import PostgresSettings
from connectors.postgres.warehouse import PostgresWarehouse
from connectors.rows import Erasure, Row
from connectors.runner import BatchingSink
from streams.core.control import Command, Verb
from streams.core.errors import ConfigError
from streams.ops.replay import Start, parse_start
from streams.ops.topics import send_command
from streams.settings import Settings
from tests.integration.harness import (
    Pipeline,
    eventually,
    postgres_schema,
    running_sink,
    table_rows,
)
from tests.integration.worker.test_scale import _single_worker_result, _workload
from tests.unit.stitching import event


@pytest.fixture
def replay_settings(pipeline: Pipeline, postgres_dsn: str) -> Iterator[Settings]:
    with postgres_schema(pipeline.settings, postgres_dsn) as settings:
        yield settings


def test_a_replay_into_fresh_state_leaves_the_warehouse_identical(
    pipeline: Pipeline, replay_settings: Settings
) -> None:
    lines = _workload(visitors=60, events=400)
    expected = _single_worker_result(lines)
    sink_topic = pipeline.reader(pipeline.settings.topics.sink)
    with running_sink(replay_settings, PostgresWarehouse(replay_settings), "pg") as connector:
        pipeline.worker()
        pipeline.produce(*lines)
        eventually(lambda: len(table_rows(replay_settings)) == len(expected), 120, "live rows")
        live_records = len(sink_topic.wait_for(lambda m: _written(connector) >= len(m) > 0, 60))
        assert {row[0]: row for row in table_rows(replay_settings)}.keys() == expected.keys()
        live = table_rows(replay_settings)
        mapping = table_rows(replay_settings, "*", f"{replay_settings.warehouse.table}_identities")
        assert mapping  # visitors identified

        log = pipeline.tmp / "replay.log"
        command = [
            sys.executable,
            "-m",
            "streams.cli",
            "replay",
            "--app-id",
            f"{pipeline.settings.app_id}-replay",
        ]
        env = {
            **os.environ,
            **pipeline.env,
            "RETROSTITCH_STATE_DIR": str(pipeline.tmp / "replay-state"),
        }
        with (
            log.open("wb") as out,
            subprocess.Popen(command, env=env, stdout=out, stderr=out) as replay,
        ):
            try:
                sink_topic.wait_for(lambda m: len(m) >= 2 * live_records, timeout=180)
                eventually(lambda: _written(connector) >= 2 * live_records, 60, "replayed rows")
                eventually(lambda: "caught up" in log.read_text(), 30, "progress says caught up")
            finally:
                replay.send_signal(signal.SIGTERM)
            assert replay.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert len(sink_topic.messages) == 2 * live_records  # the same records, once more
        assert table_rows(replay_settings) == live  # row for row, version for version
        # the mapping's versions are the records' times: a replay gives them again
        assert mapping == table_rows(
            replay_settings, "*", f"{replay_settings.warehouse.table}_identities"
        )
        assert "events/s, ETA" in log.read_text()


def _written(connector: BatchingSink) -> int:
    """Sink records the connector has taken: rows of every table, and person merges."""
    counts = connector.counts
    return (
        counts.rows_written
        + counts.identities_written
        + counts.persons_written
        + counts.person_merges
    )


def test_replay_refuses_the_live_app_id(pipeline: Pipeline) -> None:
    command = [sys.executable, "-m", "streams.cli", "replay", "--app-id", pipeline.settings.app_id]
    done = subprocess.run(
        command, env={**os.environ, **pipeline.env}, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert "replay needs a new app id" in done.stderr.decode()


def test_replay_start_positions() -> None:
    assert parse_start(None, None) == Start()
    assert parse_start(42, None) == Start(offset=42)
    assert parse_start(None, "2024-05-01T00:00:00Z") == Start(timestamp_ms=1714521600000)
    for offset, timestamp, message in [
        (1, "2024-05-01T00:00:00Z", "not both"),
        (-1, None, "0 or more"),
        (None, "yesterday", "not ISO 8601"),
        (None, "2024-05-01T00:00:00", "needs a time zone"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_start(offset, timestamp)


class _Watched(PostgresWarehouse):
    """The Postgres warehouse, looked at after every batch it writes or erases: what
    the events table then shows of ``value``."""

    def __init__(self, settings: Settings, value: str, shown: list[int]) -> None:
        super().__init__(settings)
        self._value, self._shown = value, shown

    def write(self, rows: Sequence[Row]) -> list[Rejected]:
        rejected = super().write(rows)
        self._look()
        return rejected

    def erase(self, erasures: Sequence[Erasure]) -> None:
        super().erase(erasures)
        self._look()

    def _look(self) -> None:
        postgres = self._settings.section(PostgresSettings)
        table = sql.Identifier(postgres.schema, self._settings.warehouse.table)
        query = sql.SQL("SELECT count(*) FROM {} WHERE stitched_user_id = %s").format(table)
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            row = conn.execute(query, (self._value,)).fetchone()
        self._shown.append(int(row[0]) if row else 0)


def test_an_erasure_holds_against_a_replay_into_fresh_state(
    pipeline: Pipeline, postgres_dsn: str
) -> None:
    """Jane is erased by her email; a replay of the whole input into a new app id, its
    rows written two at a time, never shows her again, after any batch."""
    jane = "jane@example.com"
    lines = [
        event("j1", "device-1"), event("j2", "device-1"), event("j3", "device-1", email=jane),
        event("j4", "device-2"), event("j5", "device-2", email=jane), event("j6", "device-2"),
        event("k1", "device-3"), event("k2", "device-3", email="kim@example.com"),
    ]  # fmt: skip
    shown: list[int] = []
    with (
        postgres_schema(pipeline.settings, postgres_dsn, batch_max_rows=2) as settings,
        running_sink(settings, _Watched(settings, jane, shown), "pg") as connector,
    ):
        pipeline.worker()
        pipeline.produce(*lines)
        eventually(lambda: len(table_rows(settings)) == 8, 90, "the live rows")
        eventually(lambda: max(shown, default=0) == 6, 30, "Jane's rows, all six stitched")
        send_command(settings, Command(Verb.ERASE, identity=jane))
        eventually(lambda: len(table_rows(settings)) == 2, 60, "the erasure")
        shown.clear()
        replay = f"{pipeline.settings.app_id}-replay"
        log = pipeline.tmp / "replay.log"
        env = {**os.environ, **pipeline.env}
        env["RETROSTITCH_STATE_DIR"] = str(pipeline.tmp / "replay-state")
        env["RETROSTITCH_BATCH_MAX_EVENTS"] = "1"  # the erasure in a batch of its own
        before = connector.counts.records_read
        command = [sys.executable, "-m", "streams.cli", "replay", "--app-id", replay]
        with (
            log.open("wb") as out,
            subprocess.Popen(command, env=env, stdout=out, stderr=out) as process,
        ):
            try:
                eventually(lambda: "caught up" in log.read_text(), 120, "the replay")
                # Kim's three records again (two events, an amendment) at least
                eventually(lambda: connector.counts.records_read >= before + 3, 60, "read")
            finally:
                process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        eventually(lambda: bool(shown), 30, "a batch of the replay written")
        assert set(shown) == {0}  # after every batch of the replay
        assert [row[0] for row in table_rows(settings, "event_id")] == ["k1", "k2"]
