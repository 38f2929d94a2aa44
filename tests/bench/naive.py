"""The naive baseline: the stitcher as most people would first write it in Faust.

One Table whose value per anonymous id is its identity and the list of its waiting
events, read and rewritten (and sent to the changelog) on every event; one event at a
time through the agent; records sent one by one. The input is read directly (the
benchmark keys it by anonymous id). Run: ``python -m tests.bench.naive`` with the same
environment variables as ``retrostitch worker``.
"""

from __future__ import annotations

import sys
from typing import Any

import faust
import orjson

from streams.settings import Settings, load_settings


def create_naive_app(settings: Settings) -> faust.App:
    rules = settings.recognition
    app = faust.App(
        f"{settings.app_id}",
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(settings.state_dir / settings.app_id),
        topic_partitions=settings.topics.partitions,
        broker_session_timeout=settings.kafka.session_timeout,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
    source = app.topic(settings.topics.input, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")  # fmt: skip
    sink = app.topic(settings.topics.sink, key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")  # fmt: skip
    visitors = app.Table("visitors", default=bytes, key_type=str, value_type=bytes)

    def record(event: dict[str, Any], version: int, status: str) -> bytes:
        return orjson.dumps({"event_id": event.get("eventn_ctx_event_id"), "version": version,
                             "status": status, "event": event})  # fmt: skip

    @app.agent(source)
    async def stitch(stream: faust.StreamT[bytes]) -> None:
        async for raw in stream:
            event = orjson.loads(raw)
            anonymous_id = str(rules.anonymous_ids[0].get(event))
            identity = [node.get(event) for node in rules.identification]
            stored = visitors[anonymous_id]
            visitor = orjson.loads(stored) if stored else {"identity": None, "waiting": []}
            event_id = str(event.get("eventn_ctx_event_id")).encode()
            if any(value is not None for value in identity):
                await sink.send(key=event_id, value=record(event, 1, "identified"))
                for waiting in visitor["waiting"]:
                    for node, value in zip(rules.identification, identity, strict=True):
                        if value is not None:
                            node.set(waiting, value)
                    key = str(waiting.get("eventn_ctx_event_id")).encode()
                    await sink.send(key=key, value=record(waiting, 2, "amended"))
                visitor = {"identity": identity, "waiting": []}
            elif visitor["identity"] is not None:
                for node, value in zip(rules.identification, visitor["identity"], strict=True):
                    if value is not None:
                        node.set(event, value)
                await sink.send(key=event_id, value=record(event, 1, "stitched"))
            else:
                await sink.send(key=event_id, value=record(event, 1, "anonymous"))
                visitor["waiting"] = [*visitor["waiting"], event]
            visitors[anonymous_id] = orjson.dumps(visitor)

    return app


def main() -> None:
    settings = load_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    app = create_naive_app(settings)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
