"""Scale by partitions: several workers share the work, and a killed one loses nothing."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.postgres.warehouse import PostgresWarehouse
from streams.core.persons import PersonLimits
from streams.core.rules import RecognitionRules
from streams.dev.reader import Message, TopicReader
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import stitch
from streams.settings import Settings
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.integration.conftest import make_pipeline
from tests.integration.harness import (
    Pipeline,
    eventually,
    postgres_schema,
    running_sink,
    sink_events,
    table_rows,
)


@pytest.fixture
def pipeline8(bootstrap_servers: str, tmp_path: Path) -> Iterator[Pipeline]:
    built = make_pipeline(bootstrap_servers, tmp_path, partitions=8)
    yield built
    for worker in built.workers:
        worker.stop()


def _workload(visitors: int = 150, events: int = 1200) -> list[bytes]:
    """Visitors browsing; some identify after a few events, some keep browsing after."""
    rng = random.Random(7)
    identifies = {v: rng.randrange(2, 8) for v in range(visitors) if rng.random() < 0.4}
    seen: Counter[int] = Counter()
    lines = []
    for i in range(events):
        visitor = rng.randrange(visitors)
        seen[visitor] += 1
        user: dict[str, Any] = {"anonymous_id": f"visitor-{visitor}"}
        if identifies.get(visitor) == seen[visitor]:
            user["email"] = f"person{visitor}@example.com"
        event = {"eventn_ctx_event_id": f"ev-{i}", "page": {"n": i}, "user": user}
        lines.append(orjson.dumps(event))
    return lines


#: the rules as the workers run them: the defaults, and persons as the settings default them
RULES = RecognitionRules(persons=PersonLimits().enabled)


def _single_worker_result(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    records = [InputRecord("in", 0, i, None, line) for i, line in enumerate(lines)]
    result = stitch(records, PartitionState(MemoryStore()), RULES, Counters())
    return _latest(r.value for r in result.sink)


def _latest(values: Any) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for record in sink_events(values):
        known = latest.get(record["event_id"])
        if known is None or record["version"] > known["version"]:
            latest[record["event_id"]] = record
    return latest


def _caught_up(expected: dict[str, dict[str, Any]]) -> Any:
    def check(messages: list[Message]) -> bool:
        latest = _latest(m.value for m in messages)
        return all(latest.get(e, {}).get("version", 0) >= r["version"] for e, r in expected.items())

    return check


def _wait_caught_up(sink: TopicReader, expected: dict[str, dict[str, Any]], timeout: float) -> None:
    """Wait for the sink to show ``expected``; on timeout, say which records it lacks."""
    try:
        sink.wait_for(_caught_up(expected), timeout=timeout)
    except TimeoutError as exc:
        latest = _latest(m.value for m in sink.messages)
        lacking = [
            f"{e} v{r['version']} {r['status']} (sink: v{latest.get(e, {}).get('version')})"
            for e, r in expected.items()
            if latest.get(e, {}).get("version", 0) < r["version"]
        ]
        raise AssertionError(f"{exc}; {len(lacking)} records lacking: {lacking[:20]}") from None


@pytest.fixture
def scale_settings(pipeline8: Pipeline, postgres_dsn: str) -> Iterator[Settings]:
    with postgres_schema(pipeline8.settings, postgres_dsn) as settings:
        yield settings


def test_three_workers_one_killed_give_what_one_worker_gives(
    pipeline8: Pipeline, scale_settings: Settings
) -> None:
    lines = _workload()
    expected = _single_worker_result(lines)
    sink = pipeline8.reader(pipeline8.settings.topics.sink)
    with running_sink(scale_settings, PostgresWarehouse(scale_settings), "pg"):
        workers = [pipeline8.worker(f"state-{n}") for n in range(3)]
        third = len(lines) // 3
        pipeline8.produce(*lines[:third])
        _wait_caught_up(sink, _single_worker_result(lines[:third]), 120)

        workers[1].stop(sig=signal.SIGKILL)  # no goodbye: its partitions move after the session
        killed = time.monotonic()
        pipeline8.produce(*lines[third : 2 * third])
        _wait_caught_up(sink, _single_worker_result(lines[: 2 * third]), 180)
        takeover = time.monotonic() - killed
        pipeline8.produce(*lines[2 * third :])
        _wait_caught_up(sink, expected, 180)
        sink.poll(1.0)

        latest = _latest(m.value for m in sink.messages)
        assert latest == expected, pipeline8.logs()
        rows = sorted(
            (r["event_id"], r["version"], r["stitched_user_id"]) for r in expected.values()
        )
        eventually(
            lambda: table_rows(scale_settings, "event_id, version, stitched_user_id") == rows,
            60,
            "the Postgres table",
        )
    print(f"takeover after SIGKILL: events produced after the kill stitched within {takeover:.1f}s")
