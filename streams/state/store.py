"""The state store seam: a sorted byte-key/value store with atomic batch writes.

``KeyValueStore`` is all the stitcher needs from storage. ``streams.state.rocks.RocksStore``
is the real one, over RocksDB; ``MemoryStore`` here keeps the same contract in a dict, for
the layers above in tests and for the local oracle. One contract suite
(tests/integration/state/test_state_store.py) runs on both.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Protocol

__all__ = ["Change", "KeyValueStore", "MemoryStore"]

#: A key and its new value; None deletes the key.
Change = tuple[bytes, bytes | None]


class KeyValueStore(Protocol):
    """A sorted map of byte keys to byte values."""

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every key starting with ``prefix`` (and not before ``start``) and its value,
        in key order."""
        ...

    def write(self, changes: Iterable[Change]) -> None:
        """Apply all changes at once: a reader sees all of them or none."""
        ...


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
