"""Faust's RocksDB table store, opening each partition's database with our options.

Faust's store builds its rocksdict options itself and takes no compression setting, so its
tables get RocksDB's default (Snappy). This store is Faust's with one change: every
database it opens is ``streams.state.rocks.compressed`` (LZ4, ZSTD for the last level). It is
registered under the URL scheme ``retrostitch`` (an entry point of the ``faust.stores``
group in ``pyproject.toml``); ``streams.worker.app`` uses it.
"""

from __future__ import annotations

from typing import Any

from faust.stores import rocksdb
from rocksdict import Options

from streams.state.rocks import compressed

__all__ = ["CompressedOptions", "Store"]


class CompressedOptions(rocksdb.RocksDBOptions):
    """Faust's RocksDB options for a table, compressed."""

    def as_options(self) -> Options:
        return compressed(super().as_options())


class Store(rocksdb.Store):
    """Faust's RocksDB store, whose databases open compressed (URL scheme ``retrostitch``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # what Faust's __init__ built, with our options (read_only and driver are popped)
        options = dict(self.options or {})
        self.rocksdb_options = CompressedOptions(**options, use_rocksdict=self.use_rocksdict)
