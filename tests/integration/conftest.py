"""Fixtures for tests against the real parts: a local Kafka-protocol broker and real
``retrostitch worker`` processes. Nothing here stands in for the broker or the state.

``KAFKA_BOOTSTRAP_SERVERS`` points the tests at a broker of your own; without it, one
local broker (Tansu, memory storage) is started for the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.dev.broker import configured_or_local
from streams.ops.topics import ensure_topics
from streams.settings import load_settings
from tests.integration.harness import FAST_GROUP, Pipeline
from tests.integration.mysql import mysql_server
from tests.integration.postgres import postgres_server


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    with configured_or_local() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def mysql_dsn() -> Iterator[str]:
    try:
        with mysql_server() as dsn:
            yield dsn
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    try:
        with postgres_server() as dsn:
            yield dsn
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)


def make_pipeline(
    bootstrap_servers: str, tmp_path: Path, partitions: int = 4, **extra: str
) -> Pipeline:
    """A deployment of its own (app id, topics) on the broker; ``extra``: more variables
    of its environment (the secured tests' security settings)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    env = {
        **FAST_GROUP,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "RETROSTITCH_APP_ID": name,
        "RETROSTITCH_INPUT_TOPIC": f"{name}.events",
        "RETROSTITCH_SINK_TOPIC": f"{name}.events.stitched",
        "RETROSTITCH_DEAD_LETTER_TOPIC": f"{name}.events.dlq",
        "RETROSTITCH_CONTROL_TOPIC": f"{name}.events.control",
        "RETROSTITCH_QUARANTINE_TOPIC": f"{name}.events.quarantine",
        "RETROSTITCH_PARTITIONS": str(partitions),
        "RETROSTITCH_STATUS_PORT": "0",  # several workers share this machine; one test sets it
        **extra,
    }
    settings = load_settings(environ=env)
    ensure_topics(settings)
    return Pipeline(bootstrap_servers, env, settings, tmp_path, [])


@pytest.fixture
def pipeline(bootstrap_servers: str, tmp_path: Path) -> Iterator[Pipeline]:
    built = make_pipeline(bootstrap_servers, tmp_path)
    yield built
    for worker in built.workers:
        worker.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test shows the logs of the workers it started, whatever it failed on."""
    report = yield
    if report.failed and call.when == "call":
        funcargs = getattr(item, "funcargs", {})
        for pipeline in (v for v in funcargs.values() if isinstance(v, Pipeline)):
            for worker in pipeline.workers:
                report.sections.append((f"worker log {worker.log_path}", worker.log_tail(400)))
    return report
