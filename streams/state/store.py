"""The state store seam: a sorted byte-key/value store with atomic batch writes.

``KeyValueStore`` is all the stitcher needs from storage. ``RocksStore`` is the real one,
over a rocksdict ``Rdict`` (in the worker, the per-partition database that Faust's table
opened and restores from the table's changelog); ``MemoryStore`` is for tests of the
layers above. One contract suite (tests/integration/test_state_store.py) runs on both.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, cast

from rocksdict import DBCompressionType, Options, Rdict, WriteBatch

__all__ = ["Change", "KeyValueStore", "MemoryStore", "RocksStore", "compressed", "rocks_options"]

#: A key and its new value; None deletes the key.
Change = tuple[bytes, bytes | None]


class KeyValueStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every key starting with ``prefix`` (and not before ``start``) and its value,
        in key order."""
        ...

    def write(self, changes: Iterable[Change]) -> None:
        """Apply all changes at once: a reader sees all of them or none."""
        ...


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


class MemoryStore:
    """A ``KeyValueStore`` in a dict, with a sorted key list for scans."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        first = bisect.bisect_left(self._keys, max(prefix, start))
        for key in self._keys[first:]:
            if not key.startswith(prefix):
                return
            yield key, self._data[key]

    def write(self, changes: Iterable[Change]) -> None:
        for key, value in list(changes):
            if value is None:
                if self._data.pop(key, None) is not None:
                    self._keys.pop(bisect.bisect_left(self._keys, key))
            else:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = value
