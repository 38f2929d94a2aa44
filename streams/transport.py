"""Faust's aiokafka transport, handing fetched records to the agents a batch at a time.

Faust's consumer delivers each fetched record to the streams inside
``Service.wait_first(deliver(record), suspend_flow)``: four asyncio futures per record, so
that a rebalance can abandon a delivery that waits on a full stream buffer. That costs
more than the stitching rules themselves. Here each fetch is read whole, then delivered by
one awaited coroutine under one ``wait_first``: a rebalance (or a stop) still abandons the
delivery where it stands, as Faust's does, and records delivered so far count as read. The
fetch itself (a call into the consumer's thread) is never abandoned half-way: an earlier
version that cancelled it left both surviving workers of a takeover test fetching nothing.
Records of a stream partition are delivered without holes (``BatchDeliveringConsumer``):
Faust's rule of marking jumped-over offsets as gaps lost records across a rebalance.
Everything else (group membership, offsets, acks, commits) is Faust's own, but for one
number: how long the broker may hold a fetch that has nothing new (Faust fixes 1.5 s, and
a broker that holds it that long even when records arrive, as the local one does, adds
that much to every amend's latency): 100 ms here.

The transport is registered under the URL scheme ``retrostitch`` (an entry point of the
``faust.transports`` group in ``pyproject.toml``); ``streams.topology`` uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka

__all__ = ["SCHEME", "DeliveryOrder", "Transport", "Verdict"]

P = TypeVar("P", bound=Hashable)  # a topic partition

SCHEME = "retrostitch"
_YIELD_EVERY = 100  # records delivered between two turns given to the rest of the loop
FETCH_MAX_WAIT_MS = 100


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

    def take_behind(self) -> dict[P, int]:
        """The partitions held back in this fetch, and where to seek each (noted: if a
        fetch from exactly there starts above it again, the offsets between are a gap)."""
        behind, self._behind = self._behind, {}
        self._sought.update(behind)
        return behind


class _ConsumerThread(aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes the broker's wait for a fetch at 1.5 s; a broker that waits it out
        # (the local one does) then adds ~1.5 s to every identification's latency.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class BatchDeliveringConsumer(aiokafka.Consumer):
    """aiokafka's consumer with one delivery task per fetched batch instead of per record,
    and records of a stream partition delivered without holes.

    Faust seeks every stream partition back to its committed offset once a rebalance's
    recovery is done; records fetched before (the fetcher runs again as soon as standby
    partitions resume) or while it seeks may still be on their way, and Faust's rule
    ("deliver what is past the read offset, mark what was jumped over as a gap, acked")
    turned such a mix into lost records: a takeover test saw a partition read 0-42, then
    116 on, its commit passing over 43-115. Here each stream partition has the offset it
    must deliver next (``DeliveryOrder``: the committed offset after a seek, else the last
    delivered + 1): a record below it is a copy and skipped, one above it is not delivered
    and the partition is sought back to ``_next``. Only when a fetch made from exactly
    there still starts above it are the offsets between taken for a real gap (compaction,
    transaction markers). While Faust seeks (it resumes the partitions first), nothing of
    a stream partition is delivered: records from the old position processed before the
    seek would be processed out of order (an identification before the events it amends).
    Changelog partitions keep Faust's rule.
    """

    _sequence: DeliveryOrder[Any]  # per stream partition, the offset to deliver next, where known
    _seeking: bool  # Faust is seeking every partition to its committed offset

    def __post_init__(self) -> None:
        super().__post_init__()
        self._sequence = DeliveryOrder()
        self._seeking = False

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _is_stream(self, tp: Any) -> bool:
        """A partition the agents read (acks on), not a table's changelog."""
        stream: bool = self.app.topics.acks_enabled_for(tp.topic)
        return stream

    async def perform_seek(self) -> None:
        # Faust resumes the stream partitions just before this seek: until it is done,
        # what they fetch comes from the old positions and is held back (sought below).
        self._seeking = True
        try:
            await super().perform_seek()
        finally:
            self._seeking = False
        for tp in filter(self._is_stream, self.assignment()):
            # Sought again, at once: fetches made while Faust's seek awaited the committed
            # offsets may have moved the partition past them already. Nothing committed
            # yet means from the start (the stitcher's consumers reset to the earliest).
            committed = self._read_offset.get(tp) or 0  # Faust set it to the committed one
            self._sequence.start(tp, committed)
            await self._seek(tp, committed)

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        if self._is_stream(partition):
            self._sequence.start(partition, offset)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """The records of one fetch, as Faust's ``getmany`` gives them, except that a
        stream partition whose records it holds back (flow stopped, new generation, not
        active) is sought back to its next offset (or to the first record held back), so
        that they come again."""
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        generation = self.app.consumer_generation_id
        held_back: dict[Any, int] = {}  # stream partition -> its first record held back
        for tp, record in self.scheduler.iterate(records):
            if (
                not self.flow_active
                or (self._seeking and self._is_stream(tp))
                or generation != self.app.consumer_generation_id
                or not (active is None or tp in active or tp in self._buffered_partitions)
            ):
                if self._is_stream(tp):
                    held_back.setdefault(tp, record.offset)
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, self._to_message(tp, record)
        assigned = self.assignment()
        for tp, first in held_back.items():
            if tp in assigned:
                await self._seek(tp, self._sequence.next.get(tp, first))

    async def _drain_messages(self, fetcher: Any) -> None:
        stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # The fetch is read to its end here, never abandoned half-way: Faust's
                # getmany keeps flags (waiting for records, flow) that a rebalance waits on.
                records = [item async for item in self.getmany(timeout=1.0)]
                await self.sleep(0)  # getmany may return at once, again and again
                if records and not self.should_stop:
                    await self.wait_first(self._deliver(records), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, records: list[tuple[Any, Any]]) -> None:
        """Hand each record to the streams, in order: stream partitions without holes
        (``_in_sequence``), changelog partitions as Faust does."""
        deliver, read, sequence = self.callback, self._read_offset, self._sequence
        acks_enabled_for = self.app.topics.acks_enabled_for
        count = 0
        for tp, message in records:
            count += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            offset, last = message.offset, read[tp]
            stream = acks_enabled_for(message.topic)
            if stream and self._seeking:
                continue  # from before the seek: perform_seek seeks the partition again
            if stream and tp in sequence.next:
                verdict = sequence.verdict(tp, offset)
                if verdict is Verdict.COPY or verdict is Verdict.BEHIND:
                    continue
                if verdict is Verdict.GAP:
                    await self._add_gap(tp, sequence.next[tp], offset)  # offsets with no record
            elif last is not None and offset < last:
                continue  # read before this fetch: a re-delivery after a seek
            elif last and offset - last > 1 and stream:
                await self._add_gap(tp, last + 1, offset)  # offsets the broker skipped
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await deliver(message)
            read[tp] = offset
            if stream:
                sequence.delivered(tp, offset)
        for tp, offset in sequence.take_behind().items():
            await self._seek(tp, offset)


class Transport(aiokafka.Transport):
    Consumer: ClassVar[type[Any]] = BatchDeliveringConsumer
