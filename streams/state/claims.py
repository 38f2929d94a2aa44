"""The merge limit's state of one partition of identities, as one batch sees it.

``ClaimState`` counts, per identity, the anonymous ids granted to it within the window
(``streams.core.merges.MergeLimit``; layout in ``streams.state.keys``), through one
``Pending`` buffer over the partition's store, like the stitch state.
"""

from __future__ import annotations

from streams.core.merges import Claim, MergeLimit
from streams.state.keys import CLAIM_ARRIVED, CLAIM_ENTRY, TS, id_part
from streams.state.pending import Pending
from streams.state.retention import Dropped
from streams.state.store import Change, KeyValueStore

__all__ = ["ClaimState"]


def _rank(key: bytes, value: bytes | None) -> int:
    """A grant's time index before the grant, a grant's removal before its index's: no
    prefix of a batch's changes leaves a grant without the index that expires it."""
    if key[:1] == CLAIM_ARRIVED:
        return 0 if value is not None else 2
    return 1


class ClaimState:
    """One partition's identities, as seen by one batch: store reads plus pending changes."""

    def __init__(self, store: KeyValueStore, limit: MergeLimit) -> None:
        self._store = store
        self._limit = limit
        self._pending = Pending(store, _rank, 3)
        self.dropped = Dropped()  # ``claims_expired``: grants that left with the window

    def claim(self, claim: Claim, now_ms: int) -> bool:
        """Whether ``claim.identity`` may take ``claim.anonymous_id`` at ``now_ms``; a grant
        is recorded. An anonymous id granted within the window is granted again."""
        prefix = CLAIM_ENTRY + id_part(claim.identity)
        cutoff = now_ms - self._limit.window_ms
        anon = id_part(claim.anonymous_id)
        current = 0
        for key, value in self._pending.merged(prefix, grouped=True).items():
            (granted_at,) = TS.unpack(value)
            if granted_at <= cutoff:
                continue  # out of the window: expiry removes it
            if key == prefix + anon:
                return True
            current += 1
        maximum = self._limit.max_anonymous_ids
        if maximum is not None and current >= maximum:
            return False
        self._remove(prefix + anon)  # an old grant, out of the window
        self._set_entry(prefix + anon, TS.pack(now_ms))
        self._pending.set(CLAIM_ARRIVED + TS.pack(now_ms) + prefix[1:] + anon, b"")
        return True

    def release(self, identity: str, anonymous_id: str) -> None:
        self._remove(CLAIM_ENTRY + id_part(identity) + id_part(anonymous_id))

    def forget(self, identity: str) -> None:
        for key in self._pending.merged(CLAIM_ENTRY + id_part(identity), grouped=True):
            self._remove(key)

    def count(self, identity: str) -> int:
        """How many anonymous ids ``identity`` holds (in or out of the window)."""
        return len(self._pending.merged(CLAIM_ENTRY + id_part(identity), grouped=True))

    def expire(self, now_ms: int) -> None:
        """Drop grants older than the window at ``now_ms``, oldest first, a bounded number."""
        cutoff = now_ms - self._limit.window_ms
        budget = self._limit.expire_per_batch
        for key, _ in self._store.scan(CLAIM_ARRIVED):
            (granted_at,) = TS.unpack_from(key, 1)
            if granted_at > cutoff or budget <= 0:
                return
            budget -= 1
            self._pending.set(key, None)
            entry = CLAIM_ENTRY + key[1 + TS.size :]
            value = self._pending.get(entry)
            if value is not None and TS.unpack(value)[0] == granted_at:
                self._set_entry(entry, None)
                self.dropped.claims_expired += 1

    def changes(self) -> list[Change]:
        """Every buffered change, each key once, in an order any prefix of which is safe
        (a crash may land a prefix in the changelog): see ``_rank``."""
        return self._pending.changes()

    def _remove(self, entry: bytes) -> None:
        value = self._pending.get(entry)
        if value is None:
            return
        self._set_entry(entry, None)
        self._pending.set(CLAIM_ARRIVED + value + entry[1:], None)

    def _set_entry(self, entry: bytes, value: bytes | None) -> None:
        identity_end = 3 + int.from_bytes(entry[1:3], "big")
        self._pending.set(entry, value, group=entry[:identity_end])
