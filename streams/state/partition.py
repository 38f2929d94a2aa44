"""The stitch state of one partition, as one batch sees it (layout: ``streams.state.keys``).

``PartitionState`` answers what the rules ask about an event in one read (``memory``: its
anonymous id's identity, whether its event id was seen, the events the id holds) and
takes what the outcome changes (``apply``), through one ``Pending`` buffer over the
partition's store: later records of a batch see the changes of earlier ones, and
``changes()`` hands them over in the order a crash may safely cut. It applies the bounds
of ``Retention`` in the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from streams.core.rules import (
    Held,
    Identity,
    Memory,
    Outcome,
    Parsed,
    RecognitionRules,
    claim_key,
    needs_held,
)
from streams.state.keys import (
    ARRIVED,
    BY_VALUE,
    COUNT,
    COUNT_VALUE,
    HELD,
    IDENTIFIED,
    IDENTIFIED_INDEX,
    MAPPING,
    MAPPING_VALUE,
    PROFILE,
    SEEN,
    SEQ,
    TS,
    UNCONFIRMED,
    decode_held,
    encode_held,
    event_id_bytes,
    id_part,
)
from streams.state.pending import Pending
from streams.state.retention import Dropped, Retention
from streams.state.store import Change, KeyValueStore

__all__ = ["Mapping", "PartitionState"]

#: the changelog order of a batch's changes (``PartitionState.changes``): deletions and
#: other keys first, then mapping rows, identities, held events, seen markers
_RANK = {MAPPING: 1, PROFILE: 2, HELD: 3, SEEN: 4}


@dataclass(frozen=True, slots=True)
class Mapping:
    """An anonymous id's user mapping row as state keeps it (``b"m"``); times in ms."""

    version: int
    first_seen: int
    first_identified: int | None = None
    last_identified: int | None = None

    def encoded(self) -> bytes:
        return MAPPING_VALUE.pack(
            self.version, self.first_seen, self.first_identified or 0, self.last_identified or 0
        )

    @classmethod
    def decoded(cls, value: bytes) -> Mapping:
        version, first_seen, first_identified, last_identified = MAPPING_VALUE.unpack(value)
        return cls(version, first_seen, first_identified or None, last_identified or None)


def _rank(key: bytes, value: bytes | None) -> int:
    return 0 if value is None else _RANK.get(key[:1], 0)


class PartitionState:
    """The state of one partition as seen by one batch: store reads plus pending changes."""

    def __init__(
        self, store: KeyValueStore, retention: Retention | None = None, *, mappings: bool = False
    ) -> None:
        self._pending = Pending(store, _rank, 5)
        self._store = store
        self._retention = Retention() if retention is None else retention
        #: keep each anonymous id's user mapping row (``mapped``) for identity records
        self.mappings = mappings
        self._dropped_upto: dict[bytes, bytes] = {}  # per held prefix: the last stored key dropped
        self.dropped = Dropped()  # what the bounds let go in this batch

    def memory(self, parsed: Parsed, rules: RecognitionRules, *, before: int) -> Memory:
        """What state knows for deciding on ``parsed`` (an event with an anonymous id): its
        anonymous id's identity, whether its event id was seen, whether the identity waits
        for the merge limit's answer, and, only where the rules need them, the events the
        id holds that arrived before offset ``before`` (``held``). Raises StateError for
        an id too long to store, before the event changes anything."""
        anonymous_id = str(parsed.anonymous_id)
        anon = id_part(anonymous_id)
        identity = self.identity(anonymous_id)
        memory = Memory(
            identity=identity,
            seen=self._pending.get(SEEN + anon + event_id_bytes(parsed.event_id)) is not None,
            unconfirmed=(
                rules.claims
                and identity is not None
                and self._pending.get(UNCONFIRMED + anon) is not None
            ),
        )
        if not needs_held(parsed, memory, rules):
            return memory
        return Memory(identity, memory.seen, self.held(anonymous_id, before), memory.unconfirmed)

    def identity(self, anonymous_id: str) -> Identity | None:
        value = self._pending.get(PROFILE + id_part(anonymous_id))
        return None if value is None else Identity(tuple(orjson.loads(value)))

    def confirmed(self, anonymous_id: str, identity: str) -> None:
        """The merge limit answered for ``identity``: A's events need not be kept for it."""
        key = UNCONFIRMED + id_part(anonymous_id)
        if self._pending.get(key) == identity.encode():
            self._pending.set(key, None)

    def seen(self, anonymous_id: str, event_id: str) -> bool:
        """Whether the event id was processed for A. Raises StateError for an id too long
        to store, before the event changes anything."""
        key = SEEN + id_part(anonymous_id) + event_id_bytes(event_id)
        return self._pending.get(key) is not None

    def forget(self, anonymous_id: str) -> list[str]:
        """Remove everything state holds of ``anonymous_id`` (an erasure); return the ids
        of the events it had seen or held, for the warehouses to delete."""
        anon = id_part(anonymous_id)
        seen = self._pending.merged(SEEN + anon)
        event_ids = {key[1 + len(anon) :].decode() for key in seen}
        for key, value in self._pending.merged(HELD + anon, grouped=True).items():
            event_ids.add(decode_held(key, value).event_id)
            self._set_held(anon, key[-SEQ.size :], None)
        for key in seen:
            self._pending.set(key, None)
        self._set_identity(anon, None)
        for key in (COUNT + anon, UNCONFIRMED + anon, MAPPING + anon):
            self._delete(key)
        self._unindex_identity(anon)
        return sorted(event_ids)

    def forget_identity(self, anonymous_id: str) -> None:
        """A forgets its identity (an un-merge); its held events stay."""
        anon = id_part(anonymous_id)
        self._set_identity(anon, None)
        self._delete(UNCONFIRMED + anon)
        self._unindex_identity(anon)

    def rehold(self, anonymous_id: str, held: Held) -> None:
        self._set_held(id_part(anonymous_id), SEQ.pack(held.seq), encode_held(held))

    def identified_as(self, value: str) -> list[str]:
        """The anonymous ids whose identity holds ``value`` (one prefix scan)."""
        prefix = BY_VALUE + id_part(value)
        return sorted(key[len(prefix) + 2 :].decode() for key in self._pending.merged(prefix))

    def held(self, anonymous_id: str, before: int | None = None) -> list[Held]:
        """The events ``anonymous_id`` holds, oldest first; with ``before``, only those that
        arrived before that offset (a batch processed again after a crash may find the
        holds of its own later events in state already: they are not there yet)."""
        prefix = HELD + id_part(anonymous_id)
        end = None if before is None else prefix + SEQ.pack(max(before, 0))
        found = self._pending.merged(prefix, grouped=True)
        return [decode_held(k, found[k]) for k in sorted(found) if end is None or k < end]

    def apply(
        self, anonymous_id: str, event_id: str, outcome: Outcome, seq: int, timestamp_ms: int
    ) -> None:
        """Buffer the state changes an outcome asks for; ``seq`` and ``timestamp_ms`` are
        the record's (its offset, and its time: when its state expires)."""
        anon = id_part(anonymous_id)
        pending = self._pending
        if outcome.identity is not None:
            self._set_identity(anon, outcome.identity)
            if self._retention.identity_ttl_ms is not None:
                self._unindex_identity(anon)
                stamp = TS.pack(max(timestamp_ms, 0))
                pending.set(IDENTIFIED + anon, stamp)
                pending.set(IDENTIFIED_INDEX + stamp + anon, b"")
        if outcome.claim is not None:
            pending.set(UNCONFIRMED + anon, claim_key(outcome.claim).encode())
        for held in outcome.rehold:
            self._set_held(anon, SEQ.pack(held.seq), encode_held(held))
        if outcome.hold is not None:
            count = self._held_count(anon)
            if count == 0 and self.mappings and pending.get(MAPPING + anon) is None:
                pending.set(MAPPING + anon, Mapping(0, max(timestamp_ms, 0)).encoded())
            cap = self._retention.max_held_per_id
            while cap is not None and count >= cap and self._drop_oldest_held(anon):
                count -= 1
                self.dropped.capped += 1
            self._set_held(anon, SEQ.pack(outcome.hold.seq), encode_held(outcome.hold))
            self._set_held_count(anon, count + 1)
        if outcome.mark_seen:
            encoded_id = event_id.encode()
            pending.set(SEEN + anon + encoded_id, b"")
            if self._retention.ttl_ms is not None:
                arrived = TS.pack(max(timestamp_ms, 0)) + anon + SEQ.pack(seq) + encoded_id
                pending.set(ARRIVED + arrived, b"")

    def expire(self, now_ms: int) -> None:
        """Drop the held events and seen markers of arrivals older than the TTL at
        ``now_ms``, oldest first, at most ``expire_per_batch`` of them, and identities
        older than theirs. Reads the stored indexes only: what this very batch added
        expires in a later one."""
        budget = self._expire_identities(now_ms, self._retention.expire_per_batch)
        ttl = self._retention.ttl_ms
        if ttl is None:
            return
        cutoff = now_ms - ttl
        for key, _ in self._store.scan(ARRIVED):
            (timestamp,) = TS.unpack_from(key, 1)
            if timestamp >= cutoff or budget <= 0:
                return
            budget -= 1
            start = 1 + TS.size
            length = int.from_bytes(key[start : start + 2], "big")
            anon = key[start : start + 2 + length]
            seq = key[start + 2 + length : start + 2 + length + SEQ.size]
            event_id = key[start + 2 + length + SEQ.size :]
            self._pending.set(key, None)
            self._pending.set(SEEN + anon + event_id, None)
            self.dropped.forgotten += 1
            if self._pending.get(HELD + anon + seq) is not None:
                self._set_held(anon, seq, None)
                self._set_held_count(anon, self._held_count(anon) - 1)
                self.dropped.expired += 1
                self._unmap_if_gone(anon)

    def mapped(self, anonymous_id: str, identified: bool, timestamp_ms: int) -> Mapping | None:
        """A's mapping changed at ``timestamp_ms`` (``identified``: to its identity, else
        back to anonymous): its row as it is now, one version up (None: mappings are off).
        The version is the change's time, or one more than the last where that is not more."""
        if not self.mappings:
            return None
        anon = id_part(anonymous_id)
        at = max(timestamp_ms, 0)
        old = self._mapping(anon) or Mapping(0, at)
        new = Mapping(
            max(old.version + 1, at),
            old.first_seen,
            old.first_identified or (at if identified else None),
            at if identified else old.last_identified,
        )
        self._pending.set(MAPPING + anon, new.encoded())
        return new

    def unmapped(self, anonymous_id: str, timestamp_ms: int) -> Mapping | None:
        """A's mapping row is erased at ``timestamp_ms``: the row one version up, for the
        erasure marker, and state forgets it (None: no row, or mappings off)."""
        anon = id_part(anonymous_id)
        old = self._mapping(anon) if self.mappings else None
        if old is None:
            return None
        self._pending.set(MAPPING + anon, None)
        version = max(old.version + 1, timestamp_ms)
        return Mapping(version, old.first_seen, old.first_identified, old.last_identified)

    def _mapping(self, anon: bytes) -> Mapping | None:
        value = self._pending.get(MAPPING + anon)
        return None if value is None else Mapping.decoded(value)

    def _unmap_if_gone(self, anon: bytes) -> None:
        """A's mapping row leaves state with the last thing state knew of A: its identity
        and its held events (the warehouse keeps the row)."""
        gone = self._held_count(anon) == 0 and self._pending.get(PROFILE + anon) is None
        if self.mappings and gone:
            self._delete(MAPPING + anon)

    def changes(self) -> list[Change]:
        """Every buffered change, each key once with its last value, in a safe order.

        The changelog gets them in this order, and a crash may land any prefix of it (the
        batch is then processed again over what landed). Mapping rows go first: a prefix
        with a mapping's new version but not the identity makes the re-run map again one
        version up, never reuse a version. Identities go before held events
        and new seen markers last: no prefix says "seen" for an event whose hold or
        identity it lacks (the event would count as a duplicate and its hold be lost), and
        no prefix holds events re-versioned by an identity it lacks (the re-run would
        amend them again, one version up). A prefix with an identity but not the holds it
        re-versioned makes the re-run emit nothing more: the first run's records stand.
        tests/unit/state/test_crash_consistency.py tries every prefix.
        """
        return self._pending.changes()

    def _expire_identities(self, now_ms: int, budget: int) -> int:
        """Forget identities set longer than the identity TTL ago; return what is left of
        ``budget``."""
        ttl = self._retention.identity_ttl_ms
        if ttl is None:
            return budget
        for key, _ in self._store.scan(IDENTIFIED_INDEX):
            stamp = key[1 : 1 + TS.size]
            if TS.unpack(stamp)[0] >= now_ms - ttl or budget <= 0:
                break
            budget -= 1
            anon = key[1 + TS.size :]
            self._pending.set(key, None)
            if self._pending.get(IDENTIFIED + anon) == stamp:  # else set again since
                self._pending.set(IDENTIFIED + anon, None)
                self._set_identity(anon, None)
                self._delete(UNCONFIRMED + anon)
                self.dropped.identities_expired += 1
                self._unmap_if_gone(anon)
        return budget

    def _set_identity(self, anon: bytes, identity: Identity | None) -> None:
        """A's identity (None: none), and the index of its values."""
        indexed = [] if identity is None else [v for v in identity.values if v is not None]
        new_keys = [BY_VALUE + id_part(str(value)) + anon for value in indexed]  # may raise
        old = self._pending.get(PROFILE + anon)
        if old is not None:
            for value in orjson.loads(old):
                if value is not None:
                    self._pending.set(BY_VALUE + id_part(str(value)) + anon, None)
        if identity is None:
            if old is not None:
                self._pending.set(PROFILE + anon, None)
            return
        self._pending.set(PROFILE + anon, orjson.dumps(list(identity.values)))
        for key in new_keys:
            self._pending.set(key, b"")

    def _unindex_identity(self, anon: bytes) -> None:
        identified = self._pending.get(IDENTIFIED + anon)
        if identified is not None:
            self._pending.set(IDENTIFIED + anon, None)
            self._pending.set(IDENTIFIED_INDEX + identified + anon, None)

    def _delete(self, key: bytes) -> None:
        """Delete ``key`` if it is there (a deletion of nothing adds no change)."""
        if self._pending.get(key) is not None:
            self._pending.set(key, None)

    def _set_held(self, anon: bytes, seq: bytes, value: bytes | None) -> None:
        prefix = HELD + anon
        self._pending.set(prefix + seq, value, group=prefix)

    def _held_count(self, anon: bytes) -> int:
        value = self._pending.get(COUNT + anon)
        return 0 if value is None else int(COUNT_VALUE.unpack(value)[0])

    def _set_held_count(self, anon: bytes, count: int) -> None:
        self._pending.set(COUNT + anon, COUNT_VALUE.pack(count) if count > 0 else None)

    def _drop_oldest_held(self, anon: bytes) -> bool:
        """Forget the oldest event ``anon`` holds; False when it holds none."""
        prefix = HELD + anon
        pending = self._pending.pending(prefix)
        oldest = min((key for key, value in pending.items() if value is not None), default=None)
        after = self._dropped_upto.get(prefix, b"")
        for key, _ in self._store.scan(prefix, after + b"\x00" if after else b""):
            if key in pending:
                continue  # dropped or rewritten in this batch: seen above
            if oldest is None or key < oldest:
                oldest = key
                self._dropped_upto[prefix] = key
            break
        if oldest is None:
            return False
        self._set_held(anon, oldest[len(prefix) :], None)
        return True
