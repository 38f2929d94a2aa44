"""Feeds: how fetched records reach an agent, a batch at a time, in order, without holes.

No Faust and no Kafka here: ``streams.worker.transport``'s consumer puts each fetch's
records on the feed of their topics and asks ``DeliveryOrder`` which to deliver; an agent
takes what is queued as one ``Batch`` (``Feed.serve``) and, once the batch is
checkpointed, tells the consumer how far each partition is processed (``Batch.done``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator
from enum import Enum
from typing import Any, Generic, TypeVar

from streams.pipeline.records import InputRecord

__all__ = ["Batch", "DeliveryOrder", "Feed", "Verdict"]

P = TypeVar("P", bound=Hashable)  # a topic partition


class Verdict(Enum):
    DELIVER = "deliver"  # the offset the partition must deliver next
    COPY = "copy"  # below it: delivered before (a fetch from an older position)
    BEHIND = "behind"  # above it: hold back, and seek the partition back to it
    GAP = "gap"  # above it, from a fetch made exactly there: the offsets between are empty


class DeliveryOrder(Generic[P]):
    """Which records of stream partitions to deliver, so that each partition's are
    delivered in offset order, once, without holes. No I/O: the consumer asks for a
    verdict on each record, says what it delivered, and seeks where ``take_behind`` says.
    """

    def __init__(self) -> None:
        self.next: dict[P, int] = {}  # per partition, the offset to deliver next
        self._sought: dict[P, int] = {}  # per partition, where it was last sought back
        self._behind: dict[P, int] = {}  # partitions to seek back after this fetch

    def start(self, tp: P, offset: int) -> None:
        """The partition was sought to ``offset``: deliver from there."""
        self.next[tp] = offset

    def verdict(self, tp: P, offset: int) -> Verdict:
        expected = self.next[tp]
        if tp in self._behind:
            return Verdict.BEHIND  # a later record of a partition already held back
        if offset < expected:
            return Verdict.COPY
        if offset > expected and self._sought.get(tp) != expected:
            self._behind[tp] = expected
            return Verdict.BEHIND
        self._sought.pop(tp, None)
        return Verdict.DELIVER if offset == expected else Verdict.GAP

    def delivered(self, tp: P, offset: int) -> None:
        self.next[tp] = offset + 1

    def run(self, tp: P, first: int, last: int, count: int) -> bool:
        """Whether a fetch's ``count`` records of ``tp``, offsets ``first`` to ``last``, are
        exactly the next ones, without holes: then all are delivered at once (else ask for
        a verdict on each)."""
        if tp in self._behind or self.next.get(tp) != first or last - first + 1 != count:
            return False
        self._sought.pop(tp, None)
        self.next[tp] = last + 1
        return True

    def take_behind(self) -> dict[P, int]:
        """The partitions held back in this fetch, and where to seek each (noted: if a
        fetch from exactly there starts above it again, the offsets between are a gap)."""
        behind, self._behind = self._behind, {}
        self._sought.update(behind)
        return behind


class Batch:
    """Records of one or more fetches, taken by an agent at once: per partition, in
    offset order, contiguous with the partition's previous batch. Until it is released,
    a rebalance or a stop waits for it."""

    def __init__(self, feed: Feed, records: dict[Any, list[InputRecord]]) -> None:
        self._feed = feed
        self._held = True
        #: per topic partition (Faust's ``TP``), its records in offset order
        self.records = records

    def by_partition(self) -> dict[int, list[InputRecord]]:
        """Every record of the batch under its partition number; the topics of one
        partition number (events, commands, answers) each in offset order."""
        grouped: dict[int, list[InputRecord]] = {}
        for tp, records in self.records.items():
            grouped.setdefault(tp.partition, []).extend(records)
        return grouped

    def done(self) -> None:
        """The batch is checkpointed: each partition is processed up to its last record."""
        for tp, records in self.records.items():
            self._feed.processed(tp, records[-1].offset)

    def release(self) -> None:
        """The agent is done with the batch, checkpointed (``done``) or not; idempotent."""
        if self._held:
            self._held = False
            self._feed._release()


class Feed:
    """Where the consumer puts the records of some topics' partitions, a fetch at a time,
    for one agent to take as ``Batch``es of at most ``max_events`` records (more only when
    a single fetch of one partition holds more)."""

    def __init__(self, topics: Iterable[str], max_events: int, max_queued: int = 8) -> None:
        self.topics = frozenset(topics)
        self.max_events = max_events
        #: what a checkpointed batch tells, per partition: the last offset it processed
        #: (the consumer sets it when it starts, so that its next commit includes it)
        self.processed: Callable[[Any, int], None] = lambda tp, offset: None
        self._queue: asyncio.Queue[dict[Any, list[InputRecord]]] = asyncio.Queue(max_queued)
        self._carried: dict[Any, list[InputRecord]] | None = None  # the next batch's start
        self._held = 0  # batches taken and not released
        self._idle = asyncio.Event()
        self._idle.set()

    async def put(self, records: dict[Any, list[InputRecord]]) -> None:
        """Queue one fetch's records (per partition, in offset order), in pieces of at
        most ``max_events``; waits while the queue is full."""
        for chunk in _chunks(records, self.max_events):
            await self._queue.put(chunk)

    def clear(self) -> None:
        """Forget what is queued (a rebalance: it is read again from the committed offsets)."""
        self._carried = None
        while not self._queue.empty():
            self._queue.get_nowait()

    async def take(self) -> Batch:
        """The next batch: what is queued, waiting only when nothing is."""
        taken, self._carried = self._carried or await self._queue.get(), None
        count = sum(len(records) for records in taken.values())
        while not self._queue.empty():
            more = self._queue.get_nowait()
            size = sum(len(records) for records in more.values())
            if count + size > self.max_events:
                self._carried = more
                break
            for tp, records in more.items():
                taken.setdefault(tp, []).extend(records)
            count += size
        self._held += 1
        self._idle.clear()
        return Batch(self, taken)

    def _release(self) -> None:
        self._held -= 1
        if not self._held:
            self._idle.set()

    @property
    def idle(self) -> bool:
        """No batch is in the agent's hands."""
        return self._idle.is_set()

    @property
    def queued(self) -> int:
        """Pieces of fetches waiting to be taken."""
        return self._queue.qsize() + (self._carried is not None)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def batches(self) -> AsyncIterator[Batch]:
        """Batch after batch, for the agent to release (``Batch.release``)."""
        while True:
            yield await self.take()

    async def serve(self, handle: Callable[[Batch], Awaitable[None]]) -> None:
        """Hand batch after batch to ``handle``; release each when it returns or raises."""
        async for batch in self.batches():
            try:
                await handle(batch)
            finally:
                batch.release()


def _chunks(
    batch: dict[Any, list[InputRecord]], max_events: int
) -> Iterator[dict[Any, list[InputRecord]]]:
    """The batch in pieces of at most ``max_events`` records, each partition's in order
    (one partition's records are never split over two pieces put out of order)."""
    chunk: dict[Any, list[InputRecord]] = {}
    size = 0
    for tp, records in batch.items():
        for start in range(0, len(records), max_events):
            part = records[start : start + max_events]
            if size and size + len(part) > max_events:
                yield chunk
                chunk, size = {}, 0
            chunk.setdefault(tp, []).extend(part)
            size += len(part)
    if chunk:
        yield chunk
