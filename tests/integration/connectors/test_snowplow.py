"""A Snowplow pipeline into retrostitch: enrich's TSV lines on the input topic, the worker
with Snowplow's ids and policy latest, rows in Postgres whose stitched user id follows the
latest user id on every row while each row's own user_id stays what its event carried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from connectors.postgres.warehouse import PostgresWarehouse
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


@pytest.fixture
def snowplow_settings(pipeline: Pipeline, postgres_dsn: str) -> Iterator[Settings]:
    pipeline.env.update(snowplow.ENVIRONMENT)
    pipeline.settings = load_settings(environ=pipeline.env)
    options = {"batch_max_seconds": 0.2, "dead_letter_topic": f"{pipeline.settings.app_id}.dlq2"}
    options["event_time_node"] = pipeline.settings.warehouse.event_time_node  # Snowplow's
    with postgres_schema(pipeline.settings, postgres_dsn, **options) as settings:
        ensure_topics(settings)
        yield settings


def test_latest_user_id_wins_on_every_row_from_enriched_tsv(
    pipeline: Pipeline, snowplow_settings: Settings
) -> None:
    settings = snowplow_settings
    dead = TopicReader(pipeline.settings.kafka, settings.topics.dead_letter)
    pipeline.worker()
    with running_sink(settings, PostgresWarehouse(settings), "pg"):
        # a shared browser: three anonymous views, user-a signs in, two views, user-b signs
        # in, one view; an app install, known by its client session's userId, then user-c
        before, after = snowplow.demo_stream()
        pipeline.produce(*before)
        pipeline.produce(*after)
        columns = "event_id, user_id, stitched_user_id, anonymous_id, event_time"
        device, phone = snowplow.BROWSER, snowplow.INSTALL
        expected = [
            ("app-1", None, "user-c", phone), ("app-2", "user-c", "user-c", phone),
            *((f"web-{n}", None, "user-b", device) for n in (1, 2, 3)),
            ("web-4", "user-a", "user-b", device),
            *((f"web-{n}", None, "user-b", device) for n in (5, 6)),
            ("web-7", "user-b", "user-b", device),
            ("web-8", None, "user-b", device),
        ]  # fmt: skip
        rows = lambda: [r[:4] for r in table_rows(settings, columns)]  # noqa: E731
        eventually(lambda: rows() == expected, 90, "postgres rows following the latest user id")
        [w1] = [r for r in table_rows(settings, columns) if r[0] == "web-1"]
        assert w1[4].isoformat() == "2024-05-01T12:00:01+00:00"  # collector_tstamp
        # the mapping rows land after the event rows of their batch, and resolve their
        # persons under the persons lock: wait for them as for the events
        mapping = lambda: sorted(  # noqa: E731
            table_rows(settings, "anonymous_id, user_id, stitched_user_id", "events_identities")
        )
        want = sorted([(device, "user-b", "user-b"), (phone, "user-c", "user-c")])
        eventually(lambda: mapping() == want, 30, "the mapping rows")
        [payload] = [r[0] for r in table_rows(settings, "payload, event_id") if r[1] == "app-1"]
        assert _contexts(payload) == [{"userId": phone}]
    dead.wait_for(lambda messages: len(messages) >= 1, timeout=30)
    [bad] = dead.messages
    assert bad.value == after[-1]  # as it arrived, with the reason
    reason = bad.headers["retrostitch.reason"].decode()
    assert "131 tab-separated fields; this line has 1" in reason


def _contexts(payload: Any) -> list[dict[str, Any]]:
    event = payload if isinstance(payload, dict) else orjson.loads(payload)
    sessions = event["contexts_com_snowplowanalytics_snowplow_client_session_1"]
    return [{"userId": s["userId"]} for s in sessions]
