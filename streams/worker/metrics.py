"""What a worker measures: the flows' counters, gauges sampled, two histograms.

The flows count into ``Counters`` (``streams.pipeline.counts``); nothing here touches
Kafka: ``streams.worker.gauges`` samples the gauges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streams.ops.status import Histogram
from streams.ops.summary import Shown
from streams.pipeline.counts import Counters

__all__ = ["LAST_IDENTIFICATION", "SHOWN", "WorkerMetrics"]

LAST_IDENTIFICATION = "last_identification_timestamp_seconds"


@dataclass
class WorkerMetrics:
    """What a worker serves on /metrics; the event loop keeps it up to date."""

    counters: Counters = field(default_factory=Counters)
    #: sampled every 5 s: consumer lag and state size per partition, last identification
    gauges: dict[str, float] = field(default_factory=dict)
    #: seconds from a stitch batch's first record in hand to its state written
    batch_seconds: Histogram = field(default_factory=lambda: Histogram("batch_seconds"))
    #: seconds from an identifying event's timestamp to its amendments acknowledged on the
    #: sink topic (its batch's checkpoint): what an analyst waits for a recognition
    amend_seconds: Histogram = field(default_factory=lambda: Histogram("amend_latency_seconds"))

    def identified_now(self) -> None:
        self.gauges[LAST_IDENTIFICATION] = time.time()


#: what ``retrostitch status`` shows of a worker
SHOWN = Shown(
    "worker",
    Counters,
    histogram=("batches", "batch_seconds"),
    lag="consumer_lag",
    last=("last identification", LAST_IDENTIFICATION),
    state=True,
)
