"""Faust's RocksDB table store, opening each partition's database with our options, and
setting aside one it cannot trust.

Faust's store builds its rocksdict options itself and takes no compression setting, so its
tables get RocksDB's default (Snappy). This store is Faust's with two changes: every
database it opens is ``streams.state.rocks.compressed`` (LZ4, ZSTD for the last level), and
a partition's database can be moved aside (``set_aside``), which happens when it cannot
be opened or is ahead of its changelog (``streams.worker.recovery`` says why). It is
registered under the URL scheme ``retrostitch`` (an entry point of the ``faust.stores``
group in ``pyproject.toml``); ``streams.worker.app`` uses it.

Private names of Faust, mode and aiokafka used here, and why:

    ``_open_for_partition``   opens one partition's database: where an unreadable one
                              is set aside and opened again empty
    ``_dbs``                  the open databases by partition: one set aside is closed
                              and dropped from it
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from faust.stores import rocksdb
from rocksdict import Options, Rdict

from streams.state.rocks import compressed

__all__ = ["CompressedOptions", "Store"]

log = logging.getLogger(__name__)


class CompressedOptions(rocksdb.RocksDBOptions):
    """Faust's RocksDB options for a table, compressed."""

    def as_options(self) -> Options:
        return compressed(super().as_options())


class Store(rocksdb.Store):
    """Faust's RocksDB store, compressed, which sets aside what it cannot trust
    (URL scheme ``retrostitch``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # what Faust's __init__ built, with our options (read_only and driver are popped)
        options = dict(self.options or {})
        self.rocksdb_options = CompressedOptions(**options, use_rocksdict=self.use_rocksdict)

    def set_aside(self, partition: int, why: str) -> Path:
        """Close the partition's database and move its directory aside, so that the next
        open starts empty (and Faust restores it); return where it went."""
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        path = self.partition_path(partition)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.set-aside-{stamp}")
        if path.exists():
            path.rename(aside)
        log.warning(
            "state of table %s partition %d set aside (%s); restoring it from the changelog; "
            "the old database is %s",
            self.table.name, partition, why, aside,
        )  # fmt: skip
        on_set_aside = getattr(self.app, "on_state_set_aside", None)
        if on_set_aside is not None:
            on_set_aside()
        return aside

    def _open_for_partition(self, partition: int) -> Rdict:
        try:
            db: Rdict = super()._open_for_partition(partition)
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise  # another process has it: Faust waits and tries again
            self.set_aside(partition, f"RocksDB cannot open it: {str(exc)[:200]}")
            db = super()._open_for_partition(partition)
        return db
