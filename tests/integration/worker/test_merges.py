"""The merge limit on the real broker: the 101st anonymous id of one identity is
quarantined, also by a worker that took over with no local state."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from streams.dev.reader import Message
from tests.integration.harness import Pipeline, eventually, free_port, http_get, sink_events

SHARED = "shared@example.com"


def _visitor(i: int) -> list[bytes]:
    anonymous_id = f"visitor-{i}"
    return [
        orjson.dumps({"eventn_ctx_event_id": f"a{i}", "user": {"anonymous_id": anonymous_id}}),
        orjson.dumps(
            {
                "eventn_ctx_event_id": f"i{i}",
                "user": {"anonymous_id": anonymous_id, "email": SHARED},
            }
        ),
    ]


def _statuses(messages: Sequence[Message]) -> dict[str, str]:
    latest: dict[str, tuple[int, str]] = {}
    for record in sink_events(m.value for m in messages):
        if record["version"] > latest.get(record["event_id"], (0, ""))[0]:
            latest[record["event_id"]] = (record["version"], record["status"])
    return {event_id: status for event_id, (_, status) in latest.items()}


def _counts(port: int) -> dict[str, float]:
    counts = {}
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith("retrostitch_") and line.split()[0].endswith("_total"):
            name, value = line.split()
            counts[name.removeprefix("retrostitch_").removesuffix("_total")] = float(value)
    return counts


def test_the_101st_anonymous_id_of_an_identity_is_quarantined_after_a_takeover(
    pipeline: Pipeline,
) -> None:
    sink = pipeline.reader(pipeline.settings.topics.sink)
    quarantine = pipeline.reader(pipeline.settings.topics.quarantine)
    first = pipeline.worker("state-1")
    pipeline.produce(*[line for i in range(100) for line in _visitor(i)])
    amended = {f"a{i}" for i in range(100)}
    sink.wait_for(
        lambda m: {k for k, s in _statuses(m).items() if s == "amended"} == amended, timeout=120
    )
    assert first.stop() == 0, pipeline.logs()

    # A worker with no local state restores the identity's count from the changelog.
    port = free_port()
    pipeline.env["RETROSTITCH_STATUS_PORT"] = str(port)
    pipeline.worker("state-2")
    pipeline.produce(*_visitor(100))
    [refused] = quarantine.wait_for(lambda m: len(m) >= 1, timeout=120)
    sink.wait_for(lambda m: _statuses(m).get("a100") == "unmerged", timeout=60)
    pipeline.produce(
        orjson.dumps({"eventn_ctx_event_id": "b100", "user": {"anonymous_id": "visitor-100"}})
    )
    sink.wait_for(lambda m: "b100" in _statuses(m), timeout=60)

    assert refused.key == b"visitor-100"
    assert refused.value == _visitor(100)[1]  # the identifying event, byte for byte
    reason = refused.headers["retrostitch.reason"].decode()
    assert "already took 100 other anonymous ids within 30 days" in reason
    source = refused.headers["retrostitch.source"].decode()
    assert source.startswith(f"{pipeline.settings.app_id}-by-anonymous-id[")
    statuses = _statuses(sink.messages)
    # amended at once, then un-merged by the refusal: as it arrived, one version up
    assert (statuses["a100"], statuses["i100"], statuses["b100"]) == (
        "unmerged",
        "identified",
        "anonymous",
    )
    assert {statuses[f"a{i}"] for i in range(100)} == {"amended"}
    eventually(lambda: _counts(port).get("quarantined") == 1, 30, "quarantined on /metrics")
    counts = _counts(port)
    assert (counts.get("claimed"), counts.get("refused_anonymous_ids")) == (1, 1)
