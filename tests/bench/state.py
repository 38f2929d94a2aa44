"""State cost: bytes on disk per waiting anonymous event, after compaction.

A worker runs a workload in which nobody identifies (every event waits), then stops. Each
partition's RocksDB is reopened with the options the worker uses, compacted, and its SST
files are summed; the count of held-event keys says how many events wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from faust.stores.rocksdb import RocksDBOptions

from streams.state.keys import HELD
from streams.state.persons import GRAPH
from streams.worker.tablestore import CompressedOptions

__all__ = ["GraphSize", "StateSize", "graph_size", "state_size"]


@dataclass(frozen=True, slots=True)
class StateSize:
    sst_bytes: int
    waiting_events: int
    keys: int

    @property
    def bytes_per_waiting_event(self) -> float:
        return self.sst_bytes / max(self.waiting_events, 1)


def state_size(state_dir: Path, options: RocksDBOptions | None = None) -> StateSize:
    """Compact every table database under ``state_dir`` (with the worker's options) and
    measure it."""
    options = options or CompressedOptions()
    sst = waiting = keys = 0
    databases = sorted(state_dir.rglob("stitch-state-*.db"))
    if not databases:
        raise RuntimeError(f"no state databases under {state_dir}")
    for path in databases:
        db = options.open(path)
        try:
            db.compact_range(None, None)
            db.flush()
            for key in db.keys():  # noqa: SIM118 (an Rdict is not iterable by key)
                keys += 1
                waiting += key.startswith(HELD)
        finally:
            db.close()
        sst += sum(f.stat().st_size for f in path.glob("*.sst"))
    return StateSize(sst, waiting, keys)


@dataclass(frozen=True, slots=True)
class GraphSize:
    sst_bytes: int
    values: int  # identification values the person graph holds

    @property
    def bytes_per_value(self) -> float:
        return self.sst_bytes / max(self.values, 1)


def graph_size(state_dir: Path, options: RocksDBOptions | None = None) -> GraphSize:
    """The person graph's tables under ``state_dir``, compacted: bytes per value."""
    options = options or CompressedOptions()
    sst = values = 0
    for path in sorted(state_dir.rglob("person-graph-*.db")):
        db = options.open(path)
        try:
            db.compact_range(None, None)
            db.flush()
            values += sum(1 for key in db.keys() if key.startswith(GRAPH))  # noqa: SIM118
        finally:
            db.close()
        sst += sum(f.stat().st_size for f in path.glob("*.sst"))
    return GraphSize(sst, values)
