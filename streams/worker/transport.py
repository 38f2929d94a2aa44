"""Faust's aiokafka transport, handing fetched records to the agents a fetch at a time.

This module reaches furthest into Faust's and aiokafka's internals (``tablestore`` and
``recovery`` touch a few names too, each listed in its docstring); the rest of the worker
uses what it exports. Faust stays the application: group membership, partition
assignment (standbys included), the tables' changelogs and their recovery, seeks to the
committed offsets after a rebalance, and the commits themselves. What goes around Faust
is how records of the agents' topics reach the agents:

- **Feeds** (``streams.worker.feed``). Faust hands every record to a stream as an event
  (a message, an event, a channel queue, stream iteration and one ack each): about half a
  worker's CPU, enough to hold an agent that does nothing near 11k records/s. Records of a
  topic that has a ``Feed`` skip all of that: the consumer groups each fetch's records by
  partition, as ``InputRecord``s built straight from aiokafka's, and puts them on the
  feed's queue; the agent takes what is queued as one ``Batch`` and, once it is
  checkpointed, acknowledges it as one offset per partition (``Batch.done``), which
  Faust's commit then commits.
- **In order, without holes.** Records of a stream partition are handed over in offset
  order, once (``DeliveryOrder``): after a rebalance Faust seeks each stream partition
  back to its committed offset, while records fetched from the old positions may still
  arrive; those are skipped, and a partition that shows a jump is sought back.
- **Drained on a rebalance and a stop.** A revocation clears the feeds' queues (the new
  owner reads those records again) and Faust's wait for its streams also waits for the
  batch an agent holds, so that its offsets are committed before the partition moves.
- **The fetch wait.** Faust fixes the broker's wait for a fetch with nothing new at 1.5 s;
  a broker that holds it that long even when records arrive (the local one does) adds
  that much to every amend's latency: 100 ms here.

Private names of Faust, mode and aiokafka used here, and why:

    aiokafka consumer ``_fetch_max_wait_ms``   the fetch wait (Faust passes no setting)
    Faust consumer ``_read_offset``            where each partition was read to: Faust's
                                               seek sets it, lag is computed from it
    ``_seek``                                  seek without Faust's bookkeeping
    ``_wait_next_records``, ``_buffered_partitions``, ``_stopped``, ``_add_gap``,
    ``_commit_every``, ``_n_acked``, ``_acked``, ``_drain_messages``, ``_to_message``
                                               Faust's own fetch loop, written again with
                                               one delivery per fetch
    ``_new_offset``, ``_filter_tps_with_pending_acks``
                                               a batch's offsets join Faust's commits
    ``_new_consumer_thread``, ``_create_worker_consumer``
                                               the consumer thread and the aiokafka
                                               consumer it makes are ours, so that the
                                               fetch wait and the loop above apply
    table ``data._db_for_partition``, ``data._dbs``, ``data.offset_key``
                                               the agents write a table's RocksDB and its
                                               changelog offset themselves (``partition_db``)

The transport is registered under the URL scheme ``retrostitch`` (an entry point of the
``faust.transports`` group in ``pyproject.toml``); ``streams.worker.app`` uses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, ClassVar

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka
from rocksdict import Rdict

from streams.pipeline.records import InputRecord
from streams.state.store import Change
from streams.worker.feed import DeliveryOrder, Feed, Verdict

__all__ = [
    "SCHEME",
    "App",
    "Transport",
    "offset_change",
    "partition_db",
    "partition_dbs",
    "read_offset",
]

SCHEME = "retrostitch"
_YIELD_EVERY = 100  # records delivered between two turns given to the rest of the loop
FETCH_MAX_WAIT_MS = 100


class App(faust.App):
    """Faust's app, with the feeds its consumer hands the agents' records to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feeds: list[Feed] = []
        #: called when a table partition's local state is set aside (streams.worker.recovery)
        self.on_state_set_aside: Callable[[], None] = lambda: None

    def feed(self, topics: Iterable[str], max_events: int) -> Feed:
        """A feed for the records of ``topics``; the consumer fills it once it starts."""
        feed = Feed(topics, max_events)
        self.feeds.append(feed)
        return feed


def partition_db(table: Any, partition: int) -> Rdict:
    """The RocksDB database that Faust's table keeps (and restores) for one partition."""
    db: Rdict = table.data._db_for_partition(partition)
    return db


def partition_dbs(table: Any) -> dict[int, Rdict]:
    """The databases of the table's partitions that this worker holds (active or standby)."""
    return dict(table.data._dbs)


def offset_change(table: Any, offset: int) -> Change:
    """Faust's record of the changelog offset that a partition's RocksDB has applied."""
    return (table.data.offset_key, str(offset).encode())


def read_offset(app: faust.App, tp: Any) -> int | None:
    """The offset of the last record of ``tp`` handed to the agents, if any."""
    consumer: Any = app.consumer
    offset: int | None = consumer._read_offset.get(tp)
    return offset


class _ConsumerThread(aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class BatchDeliveringConsumer(aiokafka.Consumer):
    """aiokafka's consumer, handing records of the feeds' topics to the feeds a fetch at a
    time, and records of every stream partition over in order without holes.

    Each stream partition has the offset it must deliver next (``DeliveryOrder``: the
    committed offset after a seek, else the last delivered + 1): a record below it is a
    copy and skipped, one above it is not delivered and the partition is sought back
    there. Only when a fetch made from exactly there still starts above it are the offsets
    between taken for a real gap (compaction, transaction markers). While Faust seeks (it
    resumes the partitions first), nothing of a stream partition is delivered: records
    from the old position would be processed out of order (an identification before the
    events it amends). Changelog partitions keep Faust's rule.
    """

    _sequence: DeliveryOrder[Any]
    _seeking: bool  # Faust is seeking every partition to its committed offset
    _feeds: dict[str, Feed]  # by topic
    _processed: dict[Any, int]  # per feed partition, the last offset a batch processed

    def __post_init__(self) -> None:
        super().__post_init__()
        self._sequence = DeliveryOrder()
        self._seeking = False
        self._feeds = {}
        self._processed = {}
        for feed in getattr(self.app, "feeds", ()):
            feed.processed = self.processed
            self._feeds.update(dict.fromkeys(feed.topics, feed))

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _is_stream(self, tp: Any) -> bool:
        """A partition the agents read (acks on), not a table's changelog."""
        stream: bool = self.app.topics.acks_enabled_for(tp.topic)
        return stream

    def processed(self, tp: Any, offset: int) -> None:
        """A feed's batch processed ``tp`` up to ``offset``: the next commit includes it."""
        if offset > self._processed.get(tp, -1):
            self._processed[tp] = offset

    def _new_offset(self, tp: Any) -> int | None:
        processed = self._processed.pop(tp, None)
        if processed is not None:
            return processed + 1
        offset: int | None = super()._new_offset(tp)
        return offset

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[Any]:
        yield from super()._filter_tps_with_pending_acks(topics)
        for tp in list(self._processed):
            if tp not in self._acked and (topics is None or tp in topics or tp.topic in topics):
                yield tp

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        # the new owner reads what is queued again; Faust's wait_empty, called in here,
        # waits for the batches in the agents' hands and commits their offsets
        """Clear the feeds (the next owner reads their records again), then Faust's own."""
        for feed in self._feeds.values():
            feed.clear()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        for tp in set(self._processed) - assigned:
            del self._processed[tp]  # a commit of the last generation that did not happen
        await super().on_partitions_assigned(assigned, generation_id)

    async def wait_empty(self) -> None:
        for feed in set(self._feeds.values()):
            await feed.wait_idle()
        await super().wait_empty()

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

    async def _fetch(self, timeout: float) -> AsyncIterator[tuple[Any, list[Any]]]:
        """The records of one fetch per partition (aiokafka's, not yet Faust messages),
        except that a stream partition whose records it holds back (flow stopped, new
        generation, not active) is sought back to its next offset (or to the first record
        held back), so that they come again."""
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        generation = self.app.consumer_generation_id
        held_back: dict[Any, int] = {}  # stream partition -> its first record held back
        for tp, fetched in records.items():
            if not fetched:
                continue
            if (
                not self.flow_active
                or (self._seeking and self._is_stream(tp))
                or generation != self.app.consumer_generation_id
                or not (active is None or tp in active or tp in self._buffered_partitions)
            ):
                if self._is_stream(tp):
                    held_back[tp] = fetched[0].offset
                continue
            yield tp, fetched
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
                # fetch keeps flags (waiting for records, flow) that a rebalance waits on.
                records = [item async for item in self._fetch(timeout=1.0)]
                await self.sleep(0)  # a fetch may return at once, again and again
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

    async def _deliver(self, fetched: list[tuple[Any, list[Any]]]) -> None:
        """Records of the feeds' topics to their feeds, one put per feed and up to
        ``max_events`` records; every other record to Faust's streams one by one, in
        order: stream partitions without holes, changelog partitions as Faust does."""
        read, sequence, feeds = self._read_offset, self._sequence, self._feeds
        acks_enabled_for = self.app.topics.acks_enabled_for
        fed: dict[Feed, dict[Any, list[InputRecord]]] = {}
        for tp, records in fetched:
            stream = acks_enabled_for(tp.topic)
            if stream and self._seeking:
                continue  # from before the seek: perform_seek seeks the partition again
            feed = feeds.get(tp.topic) if stream else None
            first, last = records[0].offset, records[-1].offset
            if feed is not None and sequence.run(tp, first, last, len(records)):
                fed.setdefault(feed, {})[tp] = [_input_record(record) for record in records]
                read[tp] = last
            else:
                await self._deliver_one_by_one(tp, records, stream, fed)
        for tp, offset in sequence.take_behind().items():
            await self._seek(tp, offset)
        inbound = self.app.monitor.stream_inbound_time
        for feed, batch in fed.items():
            if not batch:
                continue
            now = time.monotonic()
            for tp in batch:
                inbound[tp] = now  # Faust's check for stalled partitions reads it
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            await feed.put(batch)

    async def _deliver_one_by_one(
        self, tp: Any, records: list[Any], stream: bool, fed: dict[Feed, dict[Any, list[Any]]]
    ) -> None:
        """Each record of ``tp`` after a verdict: to ``fed`` under its feed if its topic
        has one, else to Faust's streams."""
        deliver, read, sequence = self.callback, self._read_offset, self._sequence
        feed = self._feeds.get(tp.topic) if stream else None
        for count, record in enumerate(records, 1):
            offset, last = record.offset, read[tp]
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
            if feed is not None:
                fed.setdefault(feed, {}).setdefault(tp, []).append(_input_record(record))
            else:
                if count % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                await deliver(self._to_message(tp, record))
            read[tp] = offset
            if stream:
                sequence.delivered(tp, offset)


def _input_record(record: Any) -> InputRecord:
    """aiokafka's record as the pipeline's (timestamps in ms; none: 0)."""
    return InputRecord(
        record.topic, record.partition, record.offset, record.key, record.value,
        record.timestamp or 0,
    )  # fmt: skip


class Transport(aiokafka.Transport):
    """Faust's aiokafka transport with ``BatchDeliveringConsumer`` (URL scheme ``retrostitch``)."""

    Consumer: ClassVar[type[Any]] = BatchDeliveringConsumer
