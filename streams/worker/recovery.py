"""Local state that cannot be trusted is set aside and restored from its changelog.

Faust restores a table partition by reading its changelog from just after the offset that
the partition's local RocksDB says it has applied. Two kinds of local database would make
a worker stop at every start instead (Faust's ``ConsistencyError``, or a crash opening it),
a crash loop under Kubernetes:

- **ahead of its changelog**: the offset it has applied is at or beyond the changelog's
  end (the changelog was deleted and made again, the broker lost its data, the volume
  holds another deployment's state);
- **unreadable**: RocksDB cannot open it (corruption, a half-written directory).

In both cases that partition's database directory is moved aside (to
``<name>.set-aside-<UTC time>``, kept for inspection), the worker says so in one warning
naming the table and partition, ``state_set_aside`` counts it on /metrics, and the
partition is restored from the start of its changelog, as a worker with an empty volume
restores it. A database locked by another process is not such a case: Faust waits for it.
A volume lost or rolled back needs nothing of this: Faust reads the changelog from where
that state stands.

Private names of Faust, mode and aiokafka used here, and why:

    ``_build_offsets``   Faust's recovery computes where each partition's restore starts
                         there: the one place to see the applied offset beside the end
    ``_recovery``        the table manager's recovery, built on first use: ours instead
"""

from __future__ import annotations

from typing import Any

from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery

from streams.worker.tablestore import Store

__all__ = ["Recovery", "TableManager"]


class Recovery(FaustRecovery):
    """Faust's recovery, which first sets aside partitions whose state is ahead."""

    async def _build_offsets(
        self, consumer: Any, tps: set[Any], destination: Any, title: str
    ) -> None:
        ends = await consumer.highwaters(*tps) if tps else {}
        for tp in tps:
            applied, end = destination.get(tp), ends.get(tp)
            table: Any = self.tp_to_table[tp]
            store = table.data
            if applied is None or end is None or applied < end or not isinstance(store, Store):
                continue
            store.set_aside(
                tp.partition,
                f"its applied changelog offset {applied} is not below the end of "
                f"{tp.topic}[{tp.partition}], {end}",
            )
            destination[tp] = None  # restore from the changelog's start
        await super()._build_offsets(consumer, tps, destination, title)


class TableManager(FaustTableManager):
    """Faust's table manager with ``Recovery`` above (the app setting ``TableManager``)."""

    @property
    def recovery(self) -> FaustRecovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        recovery: FaustRecovery = self._recovery
        return recovery
