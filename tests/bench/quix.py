"""The Quix Streams peer: the default stitching rules as a Quix Streams user would write them,
in two designs, each a fair peer on some mix.

An ``Application`` reading the input topic (keyed by anonymous id, as the benchmark
produces it) into a ``StreamingDataFrame``; one stateful ``apply`` with ``expand=True``
that returns the sink records of each event, in our envelope (event id, anonymous id,
version, status, stitched user id, the event), produced with ``to_topic`` keyed by event
id. State is Quix's default: RocksDB, scoped by message key (the anonymous id), backed by a
changelog topic, committed at Quix's default interval, at-least-once.

- ``keys`` (what Quix's documentation suggests for state that grows: a key per item): per
  anonymous id a seen marker per event id (``s:<event id>``), one key per waiting event
  (``w:<n>``), their count (``n``) and the identity: every event reads and writes O(1)
  keys, an identification reads and deletes its waiting events once.
- ``lists``: per anonymous id the identity, the list of its waiting events and the list of
  its seen event ids, each read and rewritten whole: fewer keys (faster where visitors
  have few events, mix a), but an event's cost grows with its visitor's history (mix b).

Values are (de)serialized with Quix's ``"json"`` serializers, which use orjson. Sink
records are stamped when produced (``set_timestamp``), not with their input record's
timestamp as Quix does by default, since the benchmark times the sink's record timestamps.
The local broker (Tansu) describes only the configs set on a topic, so the
``TopicManager`` passed to the ``Application`` takes Kafka's default ``retention.ms`` where
it is left out (Quix derives the changelog's config from it). Run: ``python -m
tests.bench.quix keys|lists`` with the same environment variables as ``retrostitch worker``,
in a virtualenv of its own (``make bench`` makes ``.venv-quix``: Quix Streams pins an older
confluent-kafka than ours).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from quixstreams import Application, State
from quixstreams.models.topics import Topic, TopicAdmin, TopicManager

from streams.core.rules import RecognitionRules, anonymous_id_of
from streams.settings import Settings, load_settings

KAFKA_DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)

Stitch = Callable[[dict[str, Any], State], list[dict[str, Any]]]


def record(
    event: dict[str, Any], anonymous_id: str | None, identity: list[Any] | None,
    version: int, status: str,
) -> dict[str, Any]:  # fmt: skip
    """Our sink record's envelope."""
    user = None if identity is None else next((v for v in identity if v is not None), None)
    return {
        "event_id": event.get("eventn_ctx_event_id"),
        "anonymous_id": anonymous_id,
        "stitched_user_id": user if user is not None else anonymous_id,
        "version": version,
        "status": status,
        "event": event,
    }


def keys_stitcher(rules: RecognitionRules) -> Stitch:
    def stitch(event: dict[str, Any], state: State) -> list[dict[str, Any]]:
        anonymous_id = anonymous_id_of(event, rules)
        if anonymous_id is None:
            return [record(event, None, None, 1, "passthrough")]
        seen = f"s:{event.get('eventn_ctx_event_id')}"
        if state.exists(seen):
            return []
        state.set(seen, 1)
        identity = [node.get(event) for node in rules.identification]
        if any(value is not None for value in identity):
            out = [record(event, anonymous_id, identity, 1, "identified")]
            for n in range(state.get("n", 0)):
                waiting = state.get(f"w:{n}")
                state.delete(f"w:{n}")
                write(waiting, identity, rules)
                out.append(record(waiting, anonymous_id, identity, 2, "amended"))
            state.delete("n")
            state.set("identity", identity)
            return out
        known = state.get("identity")
        if known is not None:
            write(event, known, rules)
            return [record(event, anonymous_id, known, 1, "stitched")]
        n = state.get("n", 0)
        state.set(f"w:{n}", event)
        state.set("n", n + 1)
        return [record(event, anonymous_id, None, 1, "anonymous")]

    return stitch


def lists_stitcher(rules: RecognitionRules) -> Stitch:
    def stitch(event: dict[str, Any], state: State) -> list[dict[str, Any]]:
        anonymous_id = anonymous_id_of(event, rules)
        if anonymous_id is None:
            return [record(event, None, None, 1, "passthrough")]
        event_id = event.get("eventn_ctx_event_id")
        seen = state.get("seen", [])
        if event_id in seen:
            return []
        state.set("seen", [*seen, event_id])
        identity = [node.get(event) for node in rules.identification]
        if any(value is not None for value in identity):
            out = [record(event, anonymous_id, identity, 1, "identified")]
            for waiting in state.get("waiting", []):
                write(waiting, identity, rules)
                out.append(record(waiting, anonymous_id, identity, 2, "amended"))
            state.set("identity", identity)
            state.delete("waiting")
            return out
        known = state.get("identity")
        if known is not None:
            write(event, known, rules)
            return [record(event, anonymous_id, known, 1, "stitched")]
        state.set("waiting", [*state.get("waiting", []), event])
        return [record(event, anonymous_id, None, 1, "anonymous")]

    return stitch


DESIGNS: dict[str, Callable[[RecognitionRules], Stitch]] = {
    "keys": keys_stitcher,
    "lists": lists_stitcher,
}


def write(event: dict[str, Any], identity: list[Any], rules: RecognitionRules) -> None:
    for node, value in zip(rules.identification, identity, strict=True):
        if value is not None:
            node.set(event, value)


class DefaultRetentionTopicManager(TopicManager):
    """Quix's ``TopicManager``, taking Kafka's default ``retention.ms`` for a topic whose
    described configs leave it out."""

    def _configure_topic(self, topic: Topic, broker_topic: Topic) -> Topic:
        topic = super()._configure_topic(topic, broker_topic)
        topic.broker_config.extra_config.setdefault("retention.ms", KAFKA_DEFAULT_RETENTION_MS)
        return topic


def create_quix_app(settings: Settings, design: str = "keys") -> Application:
    broker = settings.kafka.bootstrap_servers
    app = Application(
        broker_address=broker,
        topic_manager=DefaultRetentionTopicManager(TopicAdmin(broker), settings.app_id),
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        state_dir=settings.state_dir / settings.app_id,
        consumer_extra_config={
            "session.timeout.ms": int(settings.kafka.session_timeout * 1000),
            "heartbeat.interval.ms": int(settings.kafka.heartbeat_interval * 1000),
        },
        loglevel="WARNING",
    )
    source = app.topic(settings.topics.input, key_deserializer="str", value_deserializer="json")
    sink = app.topic(settings.topics.sink, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(DESIGNS[design](settings.recognition), stateful=True, expand=True)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: time.time_ns() // 1_000_000)
    sdf.to_topic(sink, key=lambda out: str(out["event_id"]))
    return app


def main() -> None:
    design = sys.argv[1] if len(sys.argv) > 1 else "keys"
    if design not in DESIGNS:
        raise SystemExit(f"usage: python -m tests.bench.quix {'|'.join(DESIGNS)}")
    settings = load_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    create_quix_app(settings, design).run()


if __name__ == "__main__":
    main()
