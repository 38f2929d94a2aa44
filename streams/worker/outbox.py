"""The worker's writes to Kafka: one librdkafka producer, and a wait for the broker's acks.

The agents hand a batch's records to ``Outbox.send_many`` (one C call for a topic's or a
partition's records, which only queues them) or, with headers or timestamps, to
``Outbox.send``, then ``await outbox.flush()``, which returns once the broker has
acknowledged everything sent so far, or raises ``BrokerError`` if any record could not be
delivered. A batch's checkpoint (``streams.worker.checkpoint``) is a sequence of such flushes.

Faust's own (aiokafka) producer builds every batch in Python, record by record, a tenth
of a worker's time at full speed; librdkafka builds them in C. Partitioning is murmur2,
as Faust's and the Java client's, so a key lands in the same partition whichever of them
wrote it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.core.errors import BrokerError
from streams.core.record import Headers
from streams.settings import KafkaSettings

__all__ = ["Outbox"]

_POLL_SECONDS = 0.001
_QUEUE_MAX_MESSAGES = 1_000_000


class Outbox:
    """Records to Kafka, acknowledged in bulk by ``flush``."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = Producer(
            {
                **settings.client_config(),
                "acks": "all",
                # records of a partition land in the order sent, without gaps or copies
                # after a retry: a crash may land a prefix of a batch's changelog, and
                # PartitionState.changes() orders it so that any prefix is safe
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": 2,
                "batch.size": settings.producer_max_batch_bytes,
                "queue.buffering.max.messages": _QUEUE_MAX_MESSAGES,
            },
            logger=logging.getLogger("librdkafka"),  # its lines in our format, not raw
        )
        self._failures: list[str] = []
        #: the offset of the last record acknowledged in each (topic, partition) whose
        #: offsets were asked for (``send(..., track=True)``)
        self.acked: dict[tuple[str, int], int] = {}

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
        *,
        track: bool = False,
        timestamp: int = 0,
    ) -> None:
        """Queue one record; ``track``: note its offset in ``acked`` once acknowledged;
        ``timestamp``: the record's, in ms (0: now). Raises ``BrokerError`` for a record
        the producer refuses at once (larger than its message limit, say)."""
        delivered = self._tracked if track else self._checked
        while True:
            try:
                if partition is None:
                    self._producer.produce(
                        topic, value, key, headers=headers, on_delivery=delivered,
                        timestamp=timestamp,
                    )  # fmt: skip
                else:
                    self._producer.produce(
                        topic, value, key, partition, headers=headers, on_delivery=delivered,
                        timestamp=timestamp,
                    )  # fmt: skip
                return
            except BufferError:  # the local queue is full: let the broker catch up
                self._producer.poll(0.05)
            except KafkaException as exc:
                reason = exc.args[0].str() if exc.args else str(exc)
                raise BrokerError(f"the broker did not take a record: {topic}: {reason}") from exc

    def send_many(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
        *,
        track: bool = False,
    ) -> None:
        """Queue (key, value) records in one call (no headers, no timestamps: librdkafka's
        batch call takes neither), in order; as ``send`` otherwise. Waits first until the
        local queue has room for all of them: a record refused for want of room while a
        later one is taken would land out of order."""
        delivered = self._tracked if track else self._checked
        batch: list[dict[str, Any]] = [{"key": key, "value": value} for key, value in records]
        while len(self._producer) + len(batch) > _QUEUE_MAX_MESSAGES and len(self._producer):
            self._producer.poll(0.05)  # let the broker catch up
        if partition is None:
            self._producer.produce_batch(topic, batch, on_delivery=delivered)
        else:
            self._producer.produce_batch(topic, batch, partition, on_delivery=delivered)
        for message in batch:
            if "_error" in message:
                self._failures.append(f"{topic}: {message['_error'].str()}")

    async def flush(self) -> None:
        """Wait until the broker acknowledged every record sent so far."""
        # Delivery reports are served here, on the event loop's thread: served from another
        # thread, each would wait for the GIL (up to 5 ms) while the loop works.
        while self._producer.poll(0) >= 0 and len(self._producer):
            await asyncio.sleep(_POLL_SECONDS)
        failures, self._failures = self._failures, []
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise BrokerError(f"the broker did not take a record: {failures[0]}{more}")

    def _checked(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}[{message.partition()}]: {error.str()}")

    def _tracked(self, error: KafkaError | None, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if error is not None:
            self._failures.append(f"{topic}[{partition}]: {error.str()}")
        elif topic is not None and partition is not None and offset is not None:
            self.acked[topic, partition] = max(offset, self.acked.get((topic, partition), -1))
