"""The RocksDB implementation of the store seam (``streams.state.store.KeyValueStore``).

In the worker each partition's database is the one Faust's table opened and restores
from the table's changelog; ``RocksStore`` reads and writes it in raw mode, and every
batch of changes lands in one ``WriteBatch`` (all or nothing). This is the only module of
``streams.state`` that loads RocksDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

from rocksdict import DBCompressionType, Options, Rdict, WriteBatch

from streams.state.store import Change

__all__ = ["RocksStore", "compressed", "rocks_options"]


def rocks_options() -> Options:
    """RocksDB options for state: raw bytes, compressed (``compressed``)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return compressed(options)


def compressed(options: Options) -> Options:
    """LZ4 for the recent levels (cheap to write), ZSTD for the last, where most data sits."""
    options.set_compression_type(DBCompressionType.lz4())
    options.set_bottommost_compression_type(DBCompressionType.zstd())
    return options


class RocksStore:
    """A ``KeyValueStore`` over one raw-mode rocksdict database."""

    def __init__(self, db: Rdict) -> None:
        self._db = db

    @classmethod
    def open(cls, path: Path) -> RocksStore:
        return cls(Rdict(str(path), options=rocks_options()))

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        items = cast(Iterable[tuple[bytes, bytes]], self._db.items(from_key=max(prefix, start)))
        for key, value in items:
            if not key.startswith(prefix):
                return
            yield key, value

    def write(self, changes: Iterable[Change]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db.write(batch)

    def close(self) -> None:
        self._db.close()
