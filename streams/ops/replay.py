"""``retrostitch replay``: reprocess the input topic into fresh state, for a backfill.

A replay is a stitcher under a new app id, hence a new consumer group, new repartition and
changelog topics and a new state directory, writing to the same sink topic. It starts at the
beginning of the input topic, at an offset, or at a time. Versions are deterministic, so the
warehouse converges to the rows of the live run: a re-emitted row carries the version it
already has, and the version-guarded writes change nothing.

While it runs, a progress line goes to stderr every few seconds: events done of those on
the topic when the replay began, the rate, and the time left.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.core.errors import ConfigError
from streams.ops.topics import end_offsets
from streams.settings import Settings

__all__ = ["Start", "parse_start", "set_start", "start_progress"]


@dataclass(frozen=True, slots=True)
class Start:
    """Where a replay begins: the beginning (offset None, time None), an offset, or a time."""

    offset: int | None = None
    timestamp_ms: int | None = None


def parse_start(offset: int | None, timestamp: str | None) -> Start:
    """Where a replay starts: an offset, an ISO 8601 time with a time zone, or neither;
    ConfigError for both, a negative offset or a time it cannot read."""
    if offset is not None and timestamp is not None:
        raise ConfigError("replay: give --from-offset or --from-timestamp, not both")
    if offset is not None and offset < 0:
        raise ConfigError(f"replay: --from-offset must be 0 or more, got {offset}")
    if timestamp is None:
        return Start(offset=offset)
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"replay: --from-timestamp {timestamp!r} is not ISO 8601") from exc
    if moment.tzinfo is None:
        raise ConfigError(f"replay: --from-timestamp {timestamp!r} needs a time zone (e.g. Z)")
    return Start(timestamp_ms=int(moment.timestamp() * 1000))


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": settings.app_id,
            "enable.auto.commit": False,
        }
    )


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    return sorted(metadata.partitions)


def set_start(settings: Settings, start: Start) -> dict[int, int]:
    """Commit the replay group's first offsets on the input topic; return them per partition.

    A new group with nothing committed starts at the beginning by itself.
    """
    topic = settings.topics.input
    consumer = _consumer(settings)
    try:
        partitions = _partitions(consumer, topic)
        if start.timestamp_ms is not None:
            wanted = [TopicPartition(topic, p, start.timestamp_ms) for p in partitions]
            found = consumer.offsets_for_times(wanted, timeout=10)
            ends = end_offsets(consumer, topic, partitions)
            offsets = {
                tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found
            }
        elif start.offset is not None:
            offsets = dict.fromkeys(partitions, start.offset)
        else:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
                for p in partitions
            }
        admin = AdminClient(settings.kafka.client_config())
        request = ConsumerGroupTopicPartitions(
            settings.app_id, [TopicPartition(topic, p, o) for p, o in offsets.items()]
        )
        for future in admin.alter_consumer_group_offsets([request]).values():
            future.result()
        return offsets
    finally:
        consumer.close()


def start_progress(
    settings: Settings, first: Mapping[int, int], every: float = 5.0
) -> threading.Event:
    """Print progress until caught up with the topic's end as of now; return a stop event."""
    stop = threading.Event()
    topic = settings.topics.input
    consumer = _consumer(settings)
    ends = end_offsets(consumer, topic, first)
    total = sum(max(0, ends[p] - first[p]) for p in first)
    began = time.monotonic()

    def say(text: str) -> None:
        print(f"replay {settings.app_id}: {text}", file=sys.stderr, flush=True)

    def report() -> None:
        try:
            while not stop.wait(every):
                committed = consumer.committed(
                    [TopicPartition(topic, p) for p in first], timeout=10
                )
                done = sum(max(0, min(tp.offset, ends[tp.partition]) - first[tp.partition])
                           for tp in committed if tp.offset >= 0)  # fmt: skip
                rate = done / max(time.monotonic() - began, 1e-9)
                eta = f"{(total - done) / rate:.0f}s" if rate > 0 else "unknown"
                share = 100.0 * done / total if total else 100.0
                say(f"{done}/{total} events ({share:.1f}%), {rate:.0f} events/s, ETA {eta}")
                if done >= total:
                    say(
                        "caught up with the input as of its start; it now runs live like any worker"
                    )
                    return
        finally:
            consumer.close()

    threading.Thread(target=report, name="replay-progress", daemon=True).start()
    return stop
