"""Dead letters: the records a warehouse refused, or that are no row, on a topic of their own.

Each goes out as it was read (key and value), with the reason and its source
``topic[partition]@offset`` in the headers (``streams.core.record.why``), and is
acknowledged before the batch that held it is committed: a dead letter is never lost to a
crash between the two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Producer

from connectors.base import Rejected
from connectors.errors import ConnectorError
from streams.core.record import why
from streams.settings import KafkaSettings

__all__ = ["DeadLetters"]

log = logging.getLogger(__name__)


class DeadLetters:
    """A producer of one dead-letter topic, every write acknowledged by all replicas."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self._producer: Producer | None = Producer({**kafka.client_config(), "acks": "all"})

    def send(self, rejected: Sequence[Rejected]) -> None:
        """Produce them and wait for their acknowledgement (ConnectorError after 30 s)."""
        assert self._producer is not None, "dead letters sent after close"
        for item in rejected:
            log.warning("dead letter %s: %s", item.source, item.reason)
            self._producer.produce(
                self.topic,
                key=item.key,
                value=item.raw,
                headers=why(item.reason, item.source),
            )
        if rejected and self._producer.flush(30) > 0:
            raise ConnectorError(f"dead-letter topic {self.topic!r} did not acknowledge in 30 s")

    def close(self) -> None:
        """Deliver what is pending, then drop the producer: the last reference, so that
        librdkafka closes its connections now, not when the broker goes away
        (confluent-kafka < 2.13, which the bench's peer pins, has no Producer.close)."""
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None
