"""One batch's changes over a store: what the batch wrote is what it reads.

Both states (``streams.state.partition``, ``streams.state.claims``) read through a
``Pending``: a key the batch changed reads as changed, others read from the store, and a
prefix scan sees the store's keys with the batch's changes applied. Nothing reaches the
store here: ``changes`` hands the buffer over, each key once with its last value, in the
order a state's rank gives, to be written to the changelog and then in one store batch.

A key family that is scanned once per record (a visitor's held events, an identity's
grants) is a *group*: its pending changes also sit in an index of their own, so such a
scan costs what the family holds, not what the whole batch changed.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.state.store import Change, KeyValueStore

__all__ = ["Pending", "Rank"]

#: a change's place in the changelog order: 0 first, up to ``ranks - 1`` last
Rank = Callable[[bytes, bytes | None], int]


def _first(key: bytes, value: bytes | None) -> int:
    return 0


class Pending:
    """The changes of one batch over ``store``; ``changes()`` orders them by ``rank``
    (``ranks`` places, batch order within each)."""

    def __init__(self, store: KeyValueStore, rank: Rank = _first, ranks: int = 1) -> None:
        self.store = store
        self._rank = rank
        self._ranks = ranks
        self._changes: dict[bytes, bytes | None] = {}
        self._groups: dict[bytes, dict[bytes, bytes | None]] = {}
        self._ordered: list[Change] | None = None  # ``changes()``, until the next change

    def get(self, key: bytes) -> bytes | None:
        changes = self._changes
        if key in changes:
            return changes[key]
        return self.store.get(key)

    def set(self, key: bytes, value: bytes | None, group: bytes | None = None) -> None:
        """Buffer ``key``'s new value (None deletes it). A key of a group is always set
        with its group (the prefix ``merged(group, grouped=True)`` scans)."""
        self._changes[key] = value
        self._ordered = None
        if group is not None:
            self._groups.setdefault(group, {})[key] = value

    def pending(self, group: bytes) -> dict[bytes, bytes | None]:
        """The batch's changes to one group, in the order they were made."""
        return self._groups.get(group, {})

    def merged(self, prefix: bytes, *, grouped: bool = False) -> dict[bytes, bytes]:
        """Every key under ``prefix`` and its value: the store's, with this batch's changes
        applied. ``grouped``: ``prefix`` is a group, whose changes come from its index."""
        if grouped:
            pending = self._groups.get(prefix, {})
        else:
            pending = {k: v for k, v in self._changes.items() if k.startswith(prefix)}
        found = dict(self.store.scan(prefix))
        for key, value in pending.items():
            if value is None:
                found.pop(key, None)
            else:
                found[key] = value
        return found

    def changes(self) -> list[Change]:
        """Every buffered change, each key once with its last value, by rank."""
        if self._ordered is None:
            ranked: tuple[list[Change], ...] = tuple([] for _ in range(self._ranks))
            rank = self._rank
            for change in self._changes.items():
                ranked[rank(*change)].append(change)
            self._ordered = [change for changes in ranked for change in changes]
        return self._ordered
