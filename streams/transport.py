"""Faust's aiokafka transport, handing fetched records to the agents a batch at a time.

Faust's consumer delivers each fetched record to the streams inside
``Service.wait_first(deliver(record), suspend_flow)``: four asyncio futures per record, so
that a rebalance can abandon a delivery that waits on a full stream buffer. That costs
more than the stitching rules themselves. Here each fetch is read whole, then delivered by
one awaited coroutine under one ``wait_first``: a rebalance (or a stop) still abandons the
delivery where it stands, as Faust's does, and records delivered so far count as read. The
fetch itself (a call into the consumer's thread) is never abandoned half-way: an earlier
version that cancelled it left both surviving workers of a takeover test fetching nothing.
Everything else (group membership, offsets, acks, gaps, commits) is Faust's own, but for
one number: how long the broker may hold a fetch that has nothing new (Faust fixes 1.5 s,
and a broker that holds it that long even when records arrive, as the local one does, adds
that much to every amend's latency): 100 ms here.

The transport is registered under the URL scheme ``retrostitch`` (an entry point of the
``faust.transports`` group in ``pyproject.toml``); ``streams.topology`` uses it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka

__all__ = ["SCHEME", "Transport"]

SCHEME = "retrostitch"
_YIELD_EVERY = 100  # records delivered between two turns given to the rest of the loop
FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes the broker's wait for a fetch at 1.5 s; a broker that waits it out
        # (the local one does) then adds ~1.5 s to every identification's latency.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class BatchDeliveringConsumer(aiokafka.Consumer):
    """aiokafka's consumer with one delivery task per fetched batch instead of per record.

    Records fetched before a seek are never delivered after it, and no record is dropped
    without its partition being repositioned to fetch it again. Faust seeks every stream
    partition back to its committed offset once a rebalance's recovery is done, and clears
    the streams' queues; a fetch made before (the fetcher runs again as soon as standby
    partitions resume) would otherwise go on being delivered and move the partition's read
    offset past records the seek is about to fetch again, which, skipped as "already read",
    would be lost (seen in the takeover test: a partition read 0-42, then 116 on). A fetch
    made *during* a seek may hold records from before or from after it: they are dropped
    too, and the partition is sought to the next offset to deliver (``_next``), so that
    whichever they were, they come again. Only the partitions seeked are concerned: Faust
    also seeks changelog partitions during recovery.
    """

    # Each partition's seeks, counted when a seek starts and again when it is done: a
    # record fetched under another count may come from either side of the seek.
    _seeks: Counter[Any]
    _next: dict[Any, int]  # per partition, the offset to deliver next, where known

    def __post_init__(self) -> None:
        super().__post_init__()
        self._seeks = Counter()
        self._next = {}

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        partitions = set(self.assignment())
        self._seeks.update(partitions)
        await super().perform_seek()
        self._seeks.update(partitions)
        for tp in partitions:  # Faust set each read offset to the committed offset
            committed = self._read_offset.get(tp)
            if committed is None:
                self._next.pop(tp, None)
            else:
                self._next[tp] = committed

    async def seek(self, partition: Any, offset: int) -> None:
        self._seeks[partition] += 1
        await super().seek(partition, offset)
        self._seeks[partition] += 1
        self._next[partition] = offset

    async def _reposition(self, partitions: Iterable[Any]) -> None:
        """Seek partitions whose fetched records were dropped to their next offset."""
        assigned = self.assignment()
        for tp in partitions:
            if tp in assigned and tp in self._next:
                await self.seek(tp, self._next[tp])

    async def _drain_messages(self, fetcher: Any) -> None:
        stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                seeks = self._seeks.copy()
                # The fetch is read to its end here, never abandoned half-way: Faust's
                # getmany keeps flags (waiting for records, flow) that a rebalance waits on.
                records = [item async for item in self.getmany(timeout=1.0)]
                await self.sleep(0)  # getmany may return at once, again and again
                if records and not self.should_stop:
                    await self.wait_first(self._deliver(records, seeks), self.suspend_flow.wait())
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

    async def _deliver(self, records: list[tuple[Any, Any]], seeks: Counter[Any]) -> None:
        """Hand each record to the streams, in order, skipping those already read and
        those of a partition seeked since the fetch (``seeks``: the counts then), which
        is then sought to its next offset."""
        deliver, read = self.callback, self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        dropped: set[Any] = set()
        count = 0
        for tp, message in records:
            count += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if seeks[tp] != self._seeks[tp]:
                dropped.add(tp)  # fetched before or while the partition was sought
                continue
            offset, last = message.offset, read[tp]
            if last is not None and offset < last:
                continue  # read before this fetch: a re-delivery after a seek
            if last and offset - last > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, last + 1, offset)  # offsets the broker skipped
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await deliver(message)
            if seeks[tp] == self._seeks[tp]:  # else the seek set it: this must not overwrite
                read[tp] = offset
                self._next[tp] = offset + 1
        if dropped:
            await self._reposition(dropped)


class Transport(aiokafka.Transport):
    Consumer: ClassVar[type[Any]] = BatchDeliveringConsumer
