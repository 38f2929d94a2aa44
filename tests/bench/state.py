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
from streams.worker.tablestore import CompressedOptions

__all__ = ["StateSize", "state_size"]


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
