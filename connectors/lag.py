"""A connector's consumer lag per partition, sampled for ``/metrics``."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from connectors.backpressure import Positions
from streams.ops.status import labelled

__all__ = ["SAMPLE_SECONDS", "Lag"]

SAMPLE_SECONDS = 5.0  # how often the consumer lag is sampled for /metrics


class Lag:
    """Per assigned partition, the high watermark of the last fetch (librdkafka's cached
    one: no request) less the offset this member reads next; as gauges
    ``sink_consumer_lag{topic,partition}``."""

    def __init__(self, consumer: Consumer, positions: Positions) -> None:
        self._consumer = consumer
        self._positions = positions  # shared with the reader
        self._sampled = 0.0
        self.gauges: dict[str, float] = {}

    def sample_if_due(self) -> None:
        """Sample, at most once every SAMPLE_SECONDS."""
        if time.monotonic() - self._sampled >= SAMPLE_SECONDS:
            self.sample()

    def sample(self) -> None:
        self._sampled = time.monotonic()
        gauges: dict[str, float] = {}
        for tp in self._consumer.assignment():
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                continue  # nothing fetched from it yet
            read = self._positions.get((tp.topic, tp.partition), max(low, 0))
            lag = labelled("sink_consumer_lag", topic=tp.topic, partition=tp.partition)
            gauges[lag] = max(high - read, 0)
        self.gauges = gauges
