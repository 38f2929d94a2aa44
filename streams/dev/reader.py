"""Reading a topic back from its start, without a consumer group: the demo's and the
tests' view of what the worker and the connectors wrote."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.core.errors import BrokerError
from streams.settings import KafkaSettings

__all__ = ["Message", "TopicReader"]


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

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                **kafka.client_config(),
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
