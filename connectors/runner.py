"""The consumer loop every connector runs: a consumer group on the sink topic, in batches.

Order of one flush (offsets are committed only once the batch is in the warehouse):

    1. the batch lands (``connectors.batch``): its rows, then its identity records into
       the user mapping table, then its erase records on both tables, each step retried
       while the warehouse is away (``connectors.backpressure``), committing nothing
       meanwhile; rejected rows come back;
    2. dead letters (rejected rows, undecodable sink records) are produced and acked
       (``connectors.deadletters``);
    3. the batch's offsets are committed.

A crash anywhere re-delivers the batch, and writing a row again changes nothing: for each
key the highest version wins in every warehouse, whatever the order of arrival.

While the warehouse is away the connector keeps its place in the group: it pauses its
partitions and goes on polling between retries, so no rebalance moves its partitions and
nothing new is read; once the batch lands it resumes them where it had read to. Should
the group take partitions away all the same, the batch is dropped uncommitted: their next
owner reads it again. Before partitions go in a rebalance, what this member read of them
is flushed and committed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.backpressure import Backpressure, Positions
from connectors.base import Warehouse
from connectors.batch import Batch, Tables
from connectors.deadletters import DeadLetters
from connectors.lag import Lag
from streams.ops.counters import counter, values
from streams.ops.status import Heartbeat, Histogram
from streams.ops.summary import Shown
from streams.settings import Settings

__all__ = ["SHOWN", "BatchingSink", "SinkCounters"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SinkCounters:
    """What a connector did, since it started; served as ``retrostitch_sink_<field>_total``."""

    records_read: int = counter("records")  # sink records consumed
    rows_written: int = counter("records")  # rows the warehouse took
    identities_written: int = counter("records")  # user mapping rows the warehouse took
    persons_written: int = counter("records")  # persons table rows the warehouse took
    person_merges: int = counter("records")  # person merges applied
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


def _consumer(settings: Settings, group_id: str) -> Consumer:
    kafka = settings.kafka
    return Consumer(
        {
            **kafka.client_config(),
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


class BatchingSink:
    """Reads the sink topic in a consumer group and writes batches to one warehouse."""

    def __init__(self, settings: Settings, warehouse: Warehouse, group_id: str) -> None:
        self._options = settings.warehouse
        self._topic = settings.topics.sink
        self.counts = SinkCounters()
        #: a flush's write to the warehouse, retries included
        self.write_seconds = Histogram("sink_write_seconds")
        self.heartbeat = Heartbeat()
        self.assigned = False  # holds partitions of the sink topic
        self.assignments = 0  # times the group gave this member partitions
        self._tables = Tables(settings, warehouse)
        self._batch = Batch()
        self._consumer = _consumer(settings, group_id)
        positions: Positions = {}  # per partition: the offset to read next
        self._positions = positions
        self._backpressure = Backpressure(
            warehouse.name, self._consumer, positions, self.heartbeat, self._retried
        )
        #: consumer lag per partition, sampled every SAMPLE_SECONDS
        self._lag = Lag(self._consumer, positions)
        self._dead_letters = DeadLetters(settings.kafka, settings.warehouse.dead_letter_topic)

    @property
    def gauges(self) -> dict[str, float]:
        """Consumer lag per partition, as last sampled."""
        return self._lag.gauges

    def counters(self) -> dict[str, float]:
        """Every counter, by its name on /metrics."""
        return {f"sink_{name}": value for name, value in values(self.counts).items()}

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set (or forever); flush and commit before returning."""
        stop = self._backpressure.stop = stop or threading.Event()
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        limit = self._options.batch_max_rows
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                for message in self._consumer.consume(min(limit, 1000), timeout=0.2):
                    self._read(message)
                if len(self._batch) >= limit or self._batch.due(self._options.batch_max_seconds):
                    self._flush()
                self._lag.sample_if_due()
            self._flush()
        finally:
            self._consumer.close()
            self._dead_letters.close()
            self._tables.close()

    def _read(self, message: Any) -> None:
        self._tables.read(message, self._batch)
        self._positions[(message.topic(), message.partition())] = message.offset() + 1
        self.counts.records_read += 1

    def _flush(self) -> None:
        """Land the batch, send its dead letters, then commit it (module docstring)."""
        batch = self._batch
        batch.started = time.monotonic()
        if not batch.offsets:
            return
        started = time.perf_counter()
        landed = self._tables.land(batch, self._backpressure.until_it_lands)
        self.write_seconds.observe(time.perf_counter() - started)
        if landed is None:  # stopped, or revoked, while it was away
            if self._backpressure.dropped:
                self._backpressure.dropped = False
                batch.clear()
            return  # nothing committed, nothing lost: the batch is read again
        dead = [*batch.rejected, *landed.rejected, *landed.refused, *landed.persons]
        self.counts.dead_lettered += len(dead)
        self._dead_letters.send(dead)
        try:
            self._consumer.commit(offsets=batch.commits(), asynchronous=False)
        except KafkaException as exc:  # e.g. the group moved on during a long outage
            log.warning(
                "commit failed (%s): the batch will be re-delivered; rows are idempotent", exc
            )
        self.counts.rows_written += len(batch.rows) - len(landed.rejected)
        self.counts.identities_written += len(batch.mappings) - len(landed.refused)
        if self._tables.persons is not None:
            self.counts.persons_written += len(batch.persons) - len(landed.persons)
            self.counts.person_merges += len(batch.merges)
        self.counts.erasures += len(batch.erasures)
        batch.clear()

    def _retried(self) -> None:
        self.counts.warehouse_unavailable += 1

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = bool(partitions)
        self.assignments += 1

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = False
        if self._backpressure.revoked(consumer):
            return  # a batch waited for the warehouse: its next owner reads it again
        with self._backpressure.rebalancing():
            self._flush()  # what this member read is written and committed before it goes
