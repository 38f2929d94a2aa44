"""The limit: the same job by hand, with nothing between the libraries and the rules.

What this machine and these libraries allow, for the benchmark to say how close the worker
comes to it: one process, a confluent-kafka consumer assigned every input partition (no
group, no commits), orjson, the default rules in their plainest form (dictionary lookups on
the event, the O(1) keys of the Quix peer's ``keys`` design: a seen marker per event, a key
per waiting event, a count, the identity), one rocksdict database written once a batch
with a ``WriteBatch`` (reads within a batch see its writes through a dict), and the
librdkafka producer writing our envelope. No Faust, no changelog, no dead letters, no
recovery: none of the guarantees the worker keeps. Run: ``python -m tests.bench.limit``
with the same environment variables as ``retrostitch worker``; SIGTERM stops it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rocksdict import Rdict, WriteBatch

from streams.settings import load_settings

BATCH = 2000


class _State:
    """A rocksdict database, and one batch's writes over it."""

    def __init__(self, path: str) -> None:
        self.db = Rdict(path)
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        value: bytes | None = self.db.get(key)
        return value

    def set(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value

    def write(self) -> None:
        batch = WriteBatch()
        for key, value in self.pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db.write(batch)
        self.pending.clear()


Record = tuple[bytes, bytes]  # the sink record's key (the event id) and value


def _record(
    event: dict[str, Any], anonymous_id: str, user: Any, version: int, status: str
) -> Record:
    event_id = str(event.get("eventn_ctx_event_id"))
    return event_id.encode(), orjson.dumps(
        {
            "event_id": event_id,
            "anonymous_id": anonymous_id,
            "stitched_user_id": user if user is not None else anonymous_id,
            "version": version,
            "status": status,
            "event": event,
        }
    )


def stitch(event: dict[str, Any], state: _State) -> list[Record]:
    """The default rules (retain): the sink records of one event."""
    user = event.get("user") or {}
    anonymous_id = user.get("anonymous_id")
    if not anonymous_id:
        return [_record(event, "", None, 1, "passthrough")]
    anon = anonymous_id.encode() + b"\0"
    seen = b"s" + anon + str(event.get("eventn_ctx_event_id")).encode()
    if state.get(seen) is not None:
        return []
    state.set(seen, b"")
    identity = [user.get("id"), user.get("email")]
    if identity[0] is not None or identity[1] is not None:
        stitched = identity[0] if identity[0] is not None else identity[1]
        out = [_record(event, anonymous_id, stitched, 1, "identified")]
        count = int(state.get(b"n" + anon) or b"0")
        for n in range(count):
            key = b"w" + anon + str(n).encode()
            waiting = orjson.loads(state.get(key) or b"{}")
            state.set(key, None)
            waiting["user"].update(
                {k: v for k, v in zip(("id", "email"), identity, strict=True) if v}
            )
            out.append(_record(waiting, anonymous_id, stitched, 2, "amended"))
        state.set(b"n" + anon, None)
        state.set(b"i" + anon, orjson.dumps(identity))
        return out
    known = state.get(b"i" + anon)
    if known is not None:
        identity = orjson.loads(known)
        user.update({k: v for k, v in zip(("id", "email"), identity, strict=True) if v})
        stitched = identity[0] if identity[0] is not None else identity[1]
        return [_record(event, anonymous_id, stitched, 1, "stitched")]
    count = int(state.get(b"n" + anon) or b"0")
    state.set(b"w" + anon + str(count).encode(), orjson.dumps(event))
    state.set(b"n" + anon, str(count + 1).encode())
    return [_record(event, anonymous_id, None, 1, "anonymous")]


def main() -> None:
    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    kafka = settings.kafka.client_config()
    topic, sink = settings.topics.input, settings.topics.sink
    consumer = Consumer({**kafka, "group.id": settings.app_id, "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    producer = Producer({**kafka, "linger.ms": 2, "queue.buffering.max.messages": 1_000_000})
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    state = _State(str(settings.state_dir / "limit"))
    try:
        while not stop.is_set():
            for message in consumer.consume(BATCH, timeout=0.2):
                if message.error() is not None:
                    continue
                for key, value in stitch(orjson.loads(message.value() or b"{}"), state):
                    producer.produce(sink, value=value, key=key)
            state.write()
            producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()
        state.db.close()


if __name__ == "__main__":
    main()
