"""A Snowplow pipeline into retrostitch: enrich's TSV lines on the input topic, the worker
with Snowplow's ids and policy latest, rows in Postgres whose stitched user id follows the
latest user id on every row while each row's own user_id stays what its event carried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from connectors.postgres import PostgresWarehouse
from streams.dev import snowplow
from streams.dev.reader import TopicReader
from streams.ops.topics import ensure_topics
from streams.settings import Settings, load_settings
from tests.integration.harness import (
    Pipeline,
    eventually,
    postgres_schema,
    running_sink,
    table_rows,
)

DEVICE = "b2f1c6c0-8f4e-4c1e-9d2a-3c1f0e7d5a41"  # one browser's domain_userid
PHONE = "3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d"  # one app install's client session userId


@pytest.fixture
def snowplow_settings(pipeline: Pipeline, postgres_dsn: str) -> Iterator[Settings]:
    pipeline.env.update(snowplow.ENVIRONMENT)
    pipeline.settings = load_settings(environ=pipeline.env)
    options = {"batch_max_seconds": 0.2, "dead_letter_topic": f"{pipeline.settings.app_id}.dlq2"}
    options["event_time_node"] = pipeline.settings.warehouse.event_time_node  # Snowplow's
    with postgres_schema(pipeline.settings, postgres_dsn, **options) as settings:
        ensure_topics(settings)
        yield settings


def _web(n: int, user_id: str | None = None) -> bytes:
    line = snowplow.web_page_view(
        event_id=f"w{n}", domain_userid=DEVICE, user_id=user_id,
        collector_tstamp=f"2024-05-01 12:00:0{n}.000",
    )  # fmt: skip
    return line.encode()


def _mobile(n: int, user_id: str | None = None) -> bytes:
    line = snowplow.mobile_screen_view(
        event_id=f"m{n}", mobile_user_id=PHONE, user_id=user_id,
        collector_tstamp=f"2024-05-01 12:05:0{n}.000",
    )  # fmt: skip
    return line.encode()


def test_latest_user_id_wins_on_every_row_from_enriched_tsv(
    pipeline: Pipeline, snowplow_settings: Settings
) -> None:
    settings = snowplow_settings
    dead = TopicReader(pipeline.bootstrap_servers, settings.topics.dead_letter)
    pipeline.worker()
    with running_sink(settings, PostgresWarehouse(settings), "pg"):
        # a shared browser: three anonymous views, A signs in, two views, B signs in, one view
        pipeline.produce(_web(1), _web(2), _web(3), _web(4, "A"), _web(5), _web(6))
        pipeline.produce(_web(7, "B"), _web(8))
        # an app install, known by its client session's userId; then signed in as C
        pipeline.produce(_mobile(1), _mobile(2, "C"))
        pipeline.produce(b"not\tan enriched event")
        columns = "event_id, user_id, stitched_user_id, anonymous_id, event_time"
        expected = [
            *(("m1", None, "C", PHONE), ("m2", "C", "C", PHONE)),
            *((f"w{n}", None, "B", DEVICE) for n in (1, 2, 3)),
            ("w4", "A", "B", DEVICE),
            *((f"w{n}", None, "B", DEVICE) for n in (5, 6)),
            ("w7", "B", "B", DEVICE),
            ("w8", None, "B", DEVICE),
        ]
        rows = lambda: [r[:4] for r in table_rows(settings, columns)]  # noqa: E731
        eventually(lambda: rows() == expected, 90, "postgres rows following the latest user id")
        [w1] = [r for r in table_rows(settings, columns) if r[0] == "w1"]
        assert w1[4].isoformat() == "2024-05-01T12:00:01+00:00"  # collector_tstamp
        mapping = table_rows(
            settings, "anonymous_id, user_id, stitched_user_id", "events_identities"
        )
        assert sorted(mapping) == sorted([(DEVICE, "B", "B"), (PHONE, "C", "C")])
        [payload] = [r[0] for r in table_rows(settings, "payload, event_id") if r[1] == "m1"]
        assert _contexts(payload) == [{"userId": PHONE}]
    dead.wait_for(lambda messages: len(messages) >= 1, timeout=30)
    [bad] = dead.messages
    assert bad.value == b"not\tan enriched event"  # as it arrived, with the reason
    reason = bad.headers["retrostitch.reason"].decode()
    assert "131 tab-separated fields; this line has 2" in reason


def _contexts(payload: Any) -> list[dict[str, Any]]:
    event = payload if isinstance(payload, dict) else orjson.loads(payload)
    sessions = event["contexts_com_snowplowanalytics_snowplow_client_session_1"]
    return [{"userId": s["userId"]} for s in sessions]
