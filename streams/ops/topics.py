"""Plain Kafka clients (confluent-kafka) for what is not the Faust worker's job:
creating topics, feeding a file of events, and reading a topic back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.core.control import Command, encode
from streams.core.errors import BadRecord, BrokerError, ConfigError
from streams.core.merges import answers_topic, claims_topic
from streams.core.rules import RecognitionRules, parse
from streams.settings import Settings

__all__ = ["Message", "TopicReader", "end_offsets", "ensure_topics", "produce_events"]


def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create the input, sink, control, quarantine and both dead-letter topics where
    missing, and the merge limit's claims and answers topics; return those created.

    With ``topics.input_keyed_by_anonymous_id``, an existing input topic must have
    ``topics.partitions`` partitions (ConfigError otherwise).

    The repartition and changelog topics are Faust's own and made by the worker.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerError(
            f"cannot list topics on {settings.kafka.bootstrap_servers}: {exc}"
        ) from exc
    topics = settings.topics
    found = existing.get(topics.input)
    keyed = topics.input_keyed_by_anonymous_id
    if keyed and found is not None and len(found.partitions) != topics.partitions:
        raise ConfigError(
            f"topics.input_keyed_by_anonymous_id: the input topic {topics.input!r} has "
            f"{len(found.partitions)} partitions and topics.partitions is "
            f"{topics.partitions}; they must be equal (the state table is partitioned "
            "like the input), or turn the setting off to repartition"
        )
    wanted = [
        topics.input,
        topics.sink,
        topics.dead_letter,
        topics.control,
        topics.quarantine,
        settings.warehouse.dead_letter_topic,
    ]
    if settings.merges.max_anonymous_ids is not None:  # co-partitioned with the state
        wanted += [claims_topic(settings.app_id), answers_topic(settings.app_id)]
    missing = [name for name in dict.fromkeys(wanted) if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(name, topics.partitions, settings.kafka.replication_factor) for name in missing],
        request_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name!r}: {exc}") from exc
    return missing


def produce_events(
    bootstrap_servers: str,
    topic: str,
    lines: Iterable[bytes],
    rules: RecognitionRules,
    timestamp_ms: int = 0,
) -> int:
    """Send each line as one record, keyed by its anonymous id where it has one, with
    ``timestamp_ms`` as the records' timestamp (0: now).

    Lines are sent byte for byte, so a malformed one reaches the worker (and its dead-letter
    topic) as it would from a real producer.
    """
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5})
    sent = 0
    for line in lines:
        value = line.rstrip(b"\r\n")
        if not value.strip():
            continue
        try:  # the same reading of an event as the worker's
            anonymous_id = parse(value, rules).anonymous_id
        except BadRecord:
            anonymous_id = None
        key = anonymous_id.encode() if anonymous_id is not None else None
        producer.produce(topic, value=value, key=key, timestamp=timestamp_ms)
        producer.poll(0)
        sent += 1
    remaining = producer.flush(30)
    if remaining:
        raise BrokerError(f"{remaining} records to {topic!r} were not acknowledged within 30 s")
    return sent


def send_command(settings: Settings, command: Command) -> int:
    """Send ``command`` to every partition of the control topic (each worker applies it
    to the state of its partitions); return how many partitions it went to."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topic = settings.topics.control
    try:
        found = admin.list_topics(topic, timeout=30).topics.get(topic)
    except KafkaException as exc:
        raise BrokerError(f"cannot read topic {topic!r}: {exc}") from exc
    if found is None or found.error is not None or not found.partitions:
        raise BrokerError(f"the control topic {topic!r} does not exist: start a worker first")
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "acks": "all"})
    value = encode(command)
    for partition in found.partitions:
        producer.produce(topic, value=value, partition=partition)
    if producer.flush(30):
        raise BrokerError(f"the command to {topic!r} was not acknowledged within 30 s")
    return len(found.partitions)


def end_offsets(consumer: Consumer, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The offset after the last record of each partition, read rather than trusted.

    Some brokers (the local one among them) answer ListOffsets(latest) with the start of a
    partition's last batch + 1. So read on from there to the real end: with a broker that
    answers right there is nothing to read, and this costs one short poll.
    """
    ends: dict[int, int] = {}
    start: list[TopicPartition] = []
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        ends[partition] = high
        if high > low:
            start.append(TopicPartition(topic, partition, high - 1))
    if start:
        consumer.assign(start)
        while batch := consumer.consume(1000, timeout=0.5):
            for message in batch:
                where, offset = message.partition(), message.offset()
                if message.error() is None and where is not None and offset is not None:
                    ends[where] = max(ends[where], offset + 1)
        consumer.unassign()
    return ends


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class TopicReader:
    """Reads every partition of a topic from the start, without a consumer group."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"retrostitch-reader-{uuid.uuid4()}",  # never joined: assign only
                "enable.auto.commit": False,
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise BrokerError(f"cannot read topic {topic!r}: {metadata.error}")
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
        )

    def poll(self, seconds: float) -> list[Message]:
        """Read what arrives within ``seconds``; return the new messages."""
        new: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for raw in self._consumer.consume(500, timeout=min(left, 0.2)):
                if raw.error() is not None:
                    raise BrokerError(f"reading {self.topic!r}: {raw.error()}")
                new.append(_message(raw))
        self.messages.extend(new)
        return new

    def wait_for(self, done: Callable[[list[Message]], bool], timeout: float) -> list[Message]:
        """Read until ``done(all messages so far)`` holds; raise TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.topic!r}: condition not met after {timeout}s "
                    f"({len(self.messages)} messages read)"
                )
            self.poll(0.2)
        return self.messages

    def close(self) -> None:
        self._consumer.close()


def _message(raw: Any) -> Message:
    return Message(
        topic=raw.topic(),
        partition=raw.partition(),
        offset=raw.offset(),
        key=raw.key(),
        value=raw.value(),
        headers={name: value for name, value in (raw.headers() or [])},
    )
