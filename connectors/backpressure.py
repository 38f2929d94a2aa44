"""Backpressure: a batch held while its warehouse is away, and the consumer kept in its group.

``until_it_lands(write, rows)`` calls ``write`` until the warehouse takes it; on
``WarehouseUnavailable`` it waits (capped exponential backoff) and tries again, committing
nothing meanwhile. While it waits, this member keeps its place in the group: it pauses
every partition it holds and goes on polling (the group measures ``max.poll.interval.ms``
between polls), so no rebalance moves its partitions and nothing new is read. Once the
write lands it resumes them from where it had read to (``positions``), and reads again
whatever the wait polled and did not keep.

Should the group take partitions away all the same (``revoked``), the waiting batch is
dropped uncommitted (``dropped``): their next owner reads it again. During a rebalance
callback, where librdkafka forbids polling, a wait is a plain sleep (``rebalancing``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.errors import ConnectorError, WarehouseUnavailable
from streams.ops.status import Heartbeat

__all__ = ["MAX_BACKOFF", "Backpressure", "Positions"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
T = TypeVar("T")
#: per partition (topic, partition), the offset this member reads next
Positions = dict[tuple[str, int], int]


class Backpressure:
    """Retries a warehouse's writes while it is away, with the consumer's partitions paused
    and the consumer polling, so that it stays in the group and reads nothing new."""

    def __init__(
        self,
        warehouse: str,
        consumer: Consumer,
        positions: Positions,
        heartbeat: Heartbeat,
        retried: Callable[[], None],
    ) -> None:
        self._warehouse = warehouse  # its name, for the log
        self._consumer = consumer
        self._positions = positions  # shared with the reader: where each partition goes on
        self._heartbeat = heartbeat
        self._retried = retried  # counts a write that found the warehouse away
        #: set: give up waiting (the connector stops)
        self.stop = threading.Event()
        self._paused: list[TopicPartition] = []  # paused while the warehouse is away
        #: per partition, the first record polled while waiting and not kept: read again
        self._unread: dict[tuple[str, int], int] = {}
        self._in_rebalance = False  # librdkafka forbids polling from its callbacks
        self.dropped = False  # partitions revoked while a batch waited: drop it

    def until_it_lands(self, write: Callable[[], T], rows: int) -> T | None:
        """``write()``'s result once the warehouse takes it; None if stopped, or the
        partitions were revoked, meanwhile."""
        delay = 0.2
        try:
            while True:
                try:
                    return write()
                except WarehouseUnavailable as exc:
                    self._retried()
                    log.warning(
                        "%s unavailable (%s): %d rows kept, nothing committed; retrying in %.1fs",
                        self._warehouse, exc, rows, delay,
                    )  # fmt: skip
                    self._heartbeat.beat()  # waiting on the warehouse is not being stuck
                    if not self._wait_in_group(delay) or self.dropped:
                        return None
                    delay = min(delay * 2, MAX_BACKOFF)
        finally:
            if self._paused or self._unread:
                self._resume()

    def revoked(self, consumer: Any) -> bool:
        """The group takes this member's partitions: True if a batch was waiting for the
        warehouse, which is then dropped (its next owner reads it again)."""
        if not self._paused:
            return False
        log.warning("partitions revoked while the warehouse is away: the batch is dropped")
        self.dropped = True
        # librdkafka keeps a partition paused across a rebalance: one given back to this
        # member must be read again from its committed offset
        consumer.resume(self._paused)
        self._paused = []
        return True

    @contextmanager
    def rebalancing(self) -> Iterator[None]:
        """Within a rebalance callback: waits sleep, without polling."""
        self._in_rebalance = True
        try:
            yield
        finally:
            self._in_rebalance = False

    def _wait_in_group(self, seconds: float) -> bool:
        """Wait ``seconds``, polling with every partition paused, so that the group keeps
        this member and nothing new is read; False if stopped meanwhile."""
        if self._in_rebalance:
            return not self.stop.wait(seconds)
        if not self._paused:
            self._paused = list(self._consumer.assignment())
            self._consumer.pause(self._paused)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.stop.is_set():
            # serves the group's callbacks; a record it returns (fetched before the pause,
            # or of a partition the group gave meanwhile) is not part of the waiting batch:
            # it is read again after the wait (``_resume``)
            for message in self._consumer.consume(100, timeout=min(left, 0.5)):
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if message.error() is None and topic is not None and partition is not None:
                    self._unread.setdefault((topic, partition), offset or 0)
            self._heartbeat.beat()
        return not self.stop.is_set()

    def _resume(self) -> None:
        """Resume the paused partitions from where this member had read to (the batch's
        records are in hand), and read again what the wait polled and did not keep."""
        paused, self._paused = self._paused, []
        unread, self._unread = self._unread, {}
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        mine = [tp for tp in paused if (tp.topic, tp.partition) in owned]
        if mine:
            self._consumer.resume(mine)
        targets: dict[tuple[str, int], int | None] = {
            (tp.topic, tp.partition): self._positions.get((tp.topic, tp.partition)) for tp in mine
        }
        for place, first in unread.items():
            if place in owned:
                known = targets.get(place)
                targets[place] = first if known is None else min(known, first)
        for (topic, partition), offset in targets.items():
            if offset is None:
                continue  # nothing read: it goes on from its committed offset
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                if (topic, partition) in unread:  # records would be skipped: stop loudly
                    raise ConnectorError(
                        f"cannot go back to {topic}[{partition}]@{offset} after an outage: {exc}"
                    ) from exc
                # not fetching yet: it starts from there anyway
                log.debug("seek of %s[%d] to %d: %s", topic, partition, offset, exc)
