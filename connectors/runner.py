"""The consumer loop every connector runs: a consumer group on the sink topic, in batches.

Order of one flush (offsets are committed only once the batch is in the warehouse):

    1. ``warehouse.write(rows)``: the rows land, version-guarded; rejected rows come back;
       ``WarehouseUnavailable`` -> wait (capped exponential backoff) and write the same
       rows again, committing nothing meanwhile; then the identity records, the same way,
       into the user mapping table (``identities``, the warehouse's ``beside``);
       then ``erase(erasures)`` on both tables: the batch's erase records, after its rows;
    2. dead letters (rejected rows, undecodable sink records) are produced and acked;
    3. the batch's offsets are committed.

A crash anywhere re-delivers the batch, and writing a row again changes nothing: for each
key the highest version wins in every warehouse, whatever the order of arrival.

While the warehouse is away the connector keeps its place in the group: it pauses its
partitions and goes on polling between retries (the group measures
``max.poll.interval.ms`` between polls), so no rebalance moves its partitions and nothing
new is read; once the batch lands it resumes them where it had read to. Should the group
take partitions away all the same, the batch is dropped uncommitted: their next owner
reads it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from connectors.base import Rejected, Warehouse, identities_layout, layout_of
from connectors.errors import BadSinkRecord, ConnectorError, WarehouseUnavailable
from connectors.rows import Erasure, Row, read_sink_record
from streams.core.record import why
from streams.ops.counters import counter, values
from streams.ops.status import Heartbeat, Histogram, labelled
from streams.ops.summary import Shown
from streams.settings import Settings

__all__ = ["SHOWN", "BatchingSink", "SinkCounters"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
T = TypeVar("T")
SAMPLE_SECONDS = 5.0  # how often the consumer lag is sampled for /metrics


@dataclass(slots=True)
class SinkCounters:
    """What a connector did, since it started; served as ``retrostitch_sink_<field>_total``."""

    records_read: int = counter("records")  # sink records consumed
    rows_written: int = counter("records")  # rows the warehouse took
    identities_written: int = counter("records")  # user mapping rows the warehouse took
    erasures: int = counter("records")  # erase records applied
    dead_lettered: int = counter("trouble")  # records sent to the dead-letter topic
    warehouse_unavailable: int = counter("trouble")  # writes retried: warehouse away


#: what ``retrostitch status`` shows of a connector
SHOWN = Shown(
    "connector",
    SinkCounters,
    histogram=("writes", "sink_write_seconds"),
    lag="sink_consumer_lag",
    prefix="sink_",
)


class BatchingSink:
    """Reads the sink topic in a consumer group and writes batches to one warehouse."""

    def __init__(self, settings: Settings, warehouse: Warehouse, group_id: str) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.layout = layout_of(settings)
        self.identities_layout = identities_layout(settings)
        #: the user mapping table, in the same warehouse
        self.identities = warehouse.beside(self.identities_layout)
        self.counts = SinkCounters()
        #: a flush's write to the warehouse, retries included
        self.write_seconds = Histogram("sink_write_seconds")
        #: consumer lag per partition, sampled every SAMPLE_SECONDS
        self.gauges: dict[str, float] = {}
        self._next: dict[tuple[str, int], int] = {}  # per partition: the offset to read next
        self._sampled = 0.0
        self.assigned = False  # holds partitions of the sink topic
        self.heartbeat = Heartbeat()
        self._rows: list[Row] = []
        self._mappings: list[Row] = []  # rows of the user mapping table
        self._erasures: list[Erasure] = []
        self._rejected: list[Rejected] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._paused: list[TopicPartition] = []  # paused while the warehouse is away
        #: per partition, the first record polled while waiting and not kept: read again
        self._unread: dict[tuple[str, int], int] = {}
        self._in_rebalance = False  # librdkafka forbids polling from its callbacks
        self._dropped = False  # partitions revoked while a batch waited: drop it
        self.assignments = 0  # times the group gave this member partitions
        kafka = settings.kafka
        self._consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(kafka.session_timeout * 1000),
                "heartbeat.interval.ms": int(kafka.heartbeat_interval * 1000),
                "max.poll.interval.ms": int(kafka.max_poll_interval * 1000),
                # how long a broker may hold a fetch with nothing new: it bounds how late a
                # record can start its batch (librdkafka's 500 ms default is felt as latency)
                "fetch.wait.max.ms": 100,
            }
        )
        self._producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all"})

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set (or forever); flush and commit before returning."""
        self._stop = stop or threading.Event()
        self._consumer.subscribe(
            [self.settings.topics.sink], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        limit = self.settings.warehouse.batch_max_rows
        try:
            while not self._stop.is_set():
                self.heartbeat.beat()
                for message in self._consumer.consume(min(limit, 1000), timeout=0.2):
                    self._add(message)
                if self._pending() >= limit or self._due():
                    self._flush()
                if time.monotonic() - self._sampled >= SAMPLE_SECONDS:
                    self._sample()
            self._flush()
        finally:
            self._consumer.close()
            self._producer.flush(30)
            # the last reference: librdkafka closes its connections now, not when the
            # broker goes away (confluent-kafka < 2.13, which the bench's peer pins, has
            # no Producer.close)
            del self._producer
            self.warehouse.close()
            self.identities.close()

    def _add(self, message: Any) -> None:
        if message.error() is not None:
            raise KafkaException(message.error())
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        source = f"{topic}[{partition}]@{offset}"
        self._offsets[(topic, partition)] = offset + 1
        self._next[(topic, partition)] = offset + 1
        self.counts.records_read += 1
        value = message.value()
        try:
            if value is None:
                raise BadSinkRecord("sink record has no value")
            read = read_sink_record(value, source, self.layout, self.identities_layout)
            if isinstance(read, Erasure):
                self._erasures.append(read)
            elif read is not None:
                (self._mappings if read.identities else self._rows).append(read)
        except BadSinkRecord as exc:
            self._rejected.append(Rejected(value or b"", message.key(), source, exc.reason))

    def _pending(self) -> int:
        return len(self._rows) + len(self._mappings) + len(self._rejected) + len(self._erasures)

    def _due(self) -> bool:
        return time.monotonic() - self._started >= self.settings.warehouse.batch_max_seconds

    def _flush(self) -> None:
        self._started = time.monotonic()
        if not self._offsets:
            return
        started = time.perf_counter()
        rejected = self._write_until_it_lands(self.warehouse, self._rows)
        refused: list[Rejected] | None = []
        if rejected is not None and self._mappings:
            refused = self._write_until_it_lands(self.identities, self._mappings)
        if refused is None:
            rejected = None
        # erasures after the rows: a row of the same batch is deleted too
        if rejected is not None and self._erasures and self._until_it_lands(self._erase, 0) is None:
            rejected = None
        self.write_seconds.observe(time.perf_counter() - started)
        if rejected is None or refused is None:  # stopped, or revoked, while it was away
            if self._dropped:
                self._dropped = False
                self._forget_batch()
            return  # nothing committed, nothing lost: the batch is read again
        self._dead_letter([*self._rejected, *rejected, *refused])
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. the group moved on during a long outage
            log.warning(
                "commit failed (%s): the batch will be re-delivered; rows are idempotent", exc
            )
        self.counts.rows_written += len(self._rows) - len(rejected)
        self.counts.identities_written += len(self._mappings) - len(refused)
        self.counts.erasures += len(self._erasures)
        self._forget_batch()

    def _forget_batch(self) -> None:
        self._rows, self._mappings, self._rejected, self._erasures = [], [], [], []
        self._offsets = {}

    def _erase(self) -> bool:
        self.warehouse.erase(self._erasures)
        self.identities.erase(self._erasures)
        return True

    def _write_until_it_lands(
        self, warehouse: Warehouse, rows: Sequence[Row]
    ) -> list[Rejected] | None:
        return self._until_it_lands(lambda: warehouse.write(rows) if rows else [], len(rows))

    def _until_it_lands(self, write: Callable[[], T], rows: int) -> T | None:
        """``write()``'s result once the warehouse takes it; None if stopped meanwhile."""
        delay = 0.2
        try:
            while True:
                try:
                    return write()
                except WarehouseUnavailable as exc:
                    self.counts.warehouse_unavailable += 1
                    log.warning(
                        "%s unavailable (%s): %d rows kept, nothing committed; retrying in %.1fs",
                        self.warehouse.name, exc, rows, delay,
                    )  # fmt: skip
                    self.heartbeat.beat()  # waiting on the warehouse is not being stuck
                    if not self._wait_in_group(delay) or self._dropped:
                        return None
                    delay = min(delay * 2, MAX_BACKOFF)
        finally:
            if self._paused or self._unread:
                self._resume()

    def _wait_in_group(self, seconds: float) -> bool:
        """Wait ``seconds``, polling with every partition paused, so that the group keeps
        this member and nothing new is read; False if stopped meanwhile."""
        if self._in_rebalance:
            return not self._stop.wait(seconds)
        if not self._paused:
            self._paused = list(self._consumer.assignment())
            self._consumer.pause(self._paused)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
            # serves the group's callbacks; a record it returns (fetched before the pause,
            # or of a partition the group gave meanwhile) is not part of the waiting batch:
            # it is read again after the wait (``_resume``)
            for message in self._consumer.consume(100, timeout=min(left, 0.5)):
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if message.error() is None and topic is not None and partition is not None:
                    self._unread.setdefault((topic, partition), offset or 0)
            self.heartbeat.beat()
        return not self._stop.is_set()

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
            (tp.topic, tp.partition): self._next.get((tp.topic, tp.partition)) for tp in mine
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

    def _sample(self) -> None:
        """Lag per assigned partition: the high watermark of the last fetch (librdkafka's
        cached one, no request) less the offset to read next."""
        self._sampled = time.monotonic()
        gauges: dict[str, float] = {}
        for tp in self._consumer.assignment():
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                continue  # nothing fetched from it yet
            read = self._next.get((tp.topic, tp.partition), max(low, 0))
            lag = labelled("sink_consumer_lag", topic=tp.topic, partition=tp.partition)
            gauges[lag] = max(high - read, 0)
        self.gauges = gauges

    def counters(self) -> dict[str, float]:
        """Every counter, by its name on /metrics."""
        return {f"sink_{name}": value for name, value in values(self.counts).items()}

    def _dead_letter(self, rejected: Sequence[Rejected]) -> None:
        topic = self.settings.warehouse.dead_letter_topic
        self.counts.dead_lettered += len(rejected)
        for item in rejected:
            log.warning("dead letter %s: %s", item.source, item.reason)
            self._producer.produce(
                topic,
                key=item.key,
                value=item.raw,
                headers=why(item.reason, item.source),
            )
        if rejected and self._producer.flush(30) > 0:
            raise ConnectorError(f"dead-letter topic {topic!r} did not acknowledge in 30 s")

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = bool(partitions)
        self.assignments += 1

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = False
        if self._paused:  # a batch waits for the warehouse: its next owner reads it again
            log.warning("partitions revoked while the warehouse is away: the batch is dropped")
            self._dropped = True
            # librdkafka keeps a partition paused across a rebalance: one given back to
            # this member must be read again from its committed offset
            consumer.resume(self._paused)
            self._paused = []
            return
        self._in_rebalance = True
        try:
            self._flush()  # what this member read is written and committed before it goes
        finally:
            self._in_rebalance = False
