"""The worker's gauges: consumer lag and state size per partition, sampled every 5 s."""

from __future__ import annotations

from typing import Any

import faust

from streams.ops.status import labelled
from streams.worker.metrics import LAST_IDENTIFICATION
from streams.worker.transport import partition_dbs, read_offset

__all__ = ["sample"]


def sample(
    app: faust.App,
    tables: dict[str, Any],
    streams: frozenset[str],
    last_identification: float | None,
) -> dict[str, float]:
    """Lag of each partition of ``streams`` this worker reads, and the size of each
    partition of ``tables`` it holds (active or standby), as labelled gauges."""
    gauges: dict[str, float] = {}
    consumer: Any = app.consumer
    for tp in consumer.assignment():
        if tp.topic not in streams:
            continue
        highwater, read = consumer.highwater(tp), read_offset(app, tp)
        if highwater is not None:
            lag = highwater - (read + 1 if read is not None else 0)
            gauges[labelled("consumer_lag", topic=tp.topic, partition=tp.partition)] = max(lag, 0)
    for name, table in tables.items():
        for partition, db in sorted(partition_dbs(table).items()):
            keys = db.property_int_value("rocksdb.estimate-num-keys") or 0
            size = sum(
                db.property_int_value(prop) or 0
                for prop in ("rocksdb.total-sst-files-size", "rocksdb.size-all-mem-tables")
            )
            gauges[labelled("state_keys", table=name, partition=partition)] = keys
            gauges[labelled("state_bytes", table=name, partition=partition)] = size
    if last_identification is not None:
        gauges[LAST_IDENTIFICATION] = last_identification
    return gauges
