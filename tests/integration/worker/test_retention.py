"""Bounded state on the real broker: the TTL and the cap hold across a takeover."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from streams.dev.reader import Message
from tests.integration.harness import Pipeline, counter, eventually, free_port, sink_events

HOUR_MS = 3600 * 1000


def _event(event_id: str, email: str | None = None) -> bytes:
    user: dict[str, Any] = {"anonymous_id": "visitor"}
    if email is not None:
        user["email"] = email
    return orjson.dumps({"eventn_ctx_event_id": event_id, "user": user})


def _latest(messages: Sequence[Message]) -> dict[str, tuple[int, str]]:
    latest: dict[str, tuple[int, str]] = {}
    for record in sink_events(m.value for m in messages):
        if record["version"] > latest.get(record["event_id"], (0, ""))[0]:
            latest[record["event_id"]] = (record["version"], record["status"])
    return latest


def test_ttl_and_cap_hold_across_a_takeover_and_are_counted(pipeline: Pipeline) -> None:
    pipeline.env |= {
        "USER_RECOGNITION_TTL_MINUTES_ANONYMOUS_EVENTS": "60",
        "USER_RECOGNITION_MAX_WAITING_EVENTS_PER_ANONYMOUS_ID": "2",
    }
    sink = pipeline.reader(pipeline.settings.topics.sink)
    first_port = free_port()
    pipeline.env["RETROSTITCH_STATUS_PORT"] = str(first_port)
    first = pipeline.worker("state-1")
    three_hours_ago = int(time.time() * 1000) - 3 * HOUR_MS
    pipeline.produce(_event("old1"), _event("old2"), _event("old3"), timestamp_ms=three_hours_ago)
    sink.wait_for(lambda m: {"old1", "old2", "old3"} <= _latest(m).keys(), timeout=90)
    eventually(lambda: counter(first_port, "capped") == 1, 30, "old1 dropped by the cap of 2")
    assert first.stop() == 0, pipeline.logs()

    # Another worker, with no local state (and room for more events, so that only time
    # drops them now): it restores old2 and old3 from the changelog, with their arrival
    # times, and the next batch of their partition expires them.
    second_port = free_port()
    pipeline.env["RETROSTITCH_STATUS_PORT"] = str(second_port)
    pipeline.env["USER_RECOGNITION_MAX_WAITING_EVENTS_PER_ANONYMOUS_ID"] = "10"
    pipeline.worker("state-2")
    pipeline.produce(_event("new1"))
    sink.wait_for(lambda m: "new1" in _latest(m), timeout=90)
    pipeline.produce(_event("who", email="a@b.com"))
    sink.wait_for(lambda m: "who" in _latest(m), timeout=90)
    sink.poll(1.0)

    assert _latest(sink.messages) == {
        "old1": (1, "anonymous"),
        "old2": (1, "anonymous"),  # expired: never amended
        "old3": (1, "anonymous"),
        "new1": (2, "amended"),
        "who": (1, "identified"),
    }
    eventually(lambda: counter(second_port, "expired") == 2, 30, "expired counted on /metrics")
    assert counter(second_port, "capped") == 0  # served from the start, never raised here
