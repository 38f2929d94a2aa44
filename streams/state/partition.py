"""How stitching state is laid out in a key-value store, and a batch's view of it.

Key families per anonymous id ``A``, and indexes by time and by identity value (``L(x)``
is the UTF-8 length of x in 2 bytes, ``id_part``, which keeps every prefix unambiguous
whatever bytes an id contains):

    b"p" L(A) A              -> the current identity: a JSON list, one value per node
    b"h" L(A) A seq(8 bytes) -> a held event: version(4) L(event id) event id raw-event
    b"n" L(A) A              -> how many events A holds (4 bytes), absent when none
    b"s" L(A) A event-id     -> b"": this event id was processed (re-deliveries skip it)
    b"t" ts(8) L(A) A seq(8) event-id -> b"": when that event arrived (ms, the record's
                                timestamp): what expiry reads, oldest first
    b"u" L(A) A              -> the identity (its claim key) the merge limit has not
                                confirmed yet for A (streams.core.merges), absent otherwise
    b"x" L(V) V L(A) A       -> b"": A's identity holds the value V (erasure by identity)
    b"q" L(A) A              -> when A's identity was last set (ms, 8 bytes); and
    b"i" ts(8) L(A) A        -> b"", the same by time: with an identity TTL only

Holding one more event is a few puts; amending k events is one prefix scan over exactly
those k keys and k puts: no value grows with a visitor's history, and the changelog
carries only the keys that changed.

``Retention`` bounds what is kept, inside the same batches and the same changelog (so a
restart or a takeover keeps the bounds): an event's held copy and seen marker leave state
``ttl_ms`` after its timestamp (``expire``, a bounded number per batch, oldest first), and
an anonymous id holds at most ``max_held_per_id`` events (holding one more drops its
oldest). A dropped held event stays in the warehouse as it was last emitted.

``PartitionState`` reads through to the store and buffers every change of a batch in
memory (later records of the batch see the earlier ones); ``changes()`` hands them over
to be written in one batch and sent to the changelog.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass

import orjson

from streams.core.errors import StateError
from streams.core.rules import Held, Identity, Outcome, claim_key
from streams.state.store import Change, KeyValueStore

__all__ = ["HELD_PREFIX", "MAX_ID_BYTES", "PartitionState", "Retention", "StateError", "id_part"]

MAX_ID_BYTES = 0xFFFF
_PROFILE, _HELD, _COUNT, _SEEN, _ARRIVED = b"p", b"h", b"n", b"s", b"t"
_UNCONFIRMED = b"u"
_IDENTIFIED, _IDENTIFIED_INDEX = b"q", b"i"
_BY_VALUE = b"x"
HELD_PREFIX = _HELD  # every held (waiting) event key starts with it
_SEQ = struct.Struct(">Q")
_TS = struct.Struct(">Q")
_COUNT_VALUE = struct.Struct(">I")
_HELD_HEAD = struct.Struct(">IH")  # version, event id length
DAY_MS = 24 * 3600 * 1000
#: the order of a batch's changes in the changelog (``PartitionState.changes``): deletions
#: and other keys first, then identities, held events, seen markers
_RANK = {_PROFILE: 1, _HELD: 2, _SEEN: 3}


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many events state keeps per anonymous id (README: bounded state)."""

    #: an event's held copy and seen marker leave state this long after its timestamp;
    #: None keeps them for ever (state then grows without bound)
    ttl_ms: int | None = 30 * DAY_MS
    #: the most events one anonymous id holds; holding one more drops its oldest. None: no cap
    max_held_per_id: int | None = 10_000
    #: an anonymous id forgets its identity this long after it was last identified (its
    #: later events wait again, for the next identification); None: never
    identity_ttl_ms: int | None = None
    #: the most arrivals one batch expires per partition (a backlog of expiries, after a
    #: long stop, is worked off over the next batches instead of stalling one)
    expire_per_batch: int = 20_000


def id_part(text: str) -> bytes:
    """An id as a key part: its UTF-8 length in 2 bytes, then its bytes (every prefix made
    of such parts is unambiguous, whatever bytes an id contains)."""
    data = text.encode()
    if len(data) > MAX_ID_BYTES:
        raise StateError(f"id of {len(data)} bytes is longer than {MAX_ID_BYTES}: {text[:40]!r}…")
    return len(data).to_bytes(2, "big") + data


def _encode_held(held: Held) -> bytes:
    event_id = held.event_id.encode()
    return _HELD_HEAD.pack(held.version, len(event_id)) + event_id + held.raw


def _decode_held(key: bytes, value: bytes) -> Held:
    version, length = _HELD_HEAD.unpack_from(value)
    start = _HELD_HEAD.size
    event_id = value[start : start + length].decode()
    (seq,) = _SEQ.unpack_from(key, len(key) - _SEQ.size)
    return Held(seq, event_id, value[start + length :], version)


class PartitionState:
    """The state of one partition as seen by one batch: store reads plus pending changes."""

    def __init__(self, store: KeyValueStore, retention: Retention | None = None) -> None:
        self._store = store
        self._retention = Retention() if retention is None else retention
        self._pending: dict[bytes, bytes | None] = {}
        self._pending_held: dict[bytes, dict[bytes, bytes | None]] = {}
        self._ordered: list[Change] | None = None  # ``changes()``, until the next change
        self._dropped_upto: dict[bytes, bytes] = {}  # per held prefix: the last stored key dropped
        #: what retention dropped in this batch: "expired" and "capped" held events,
        #: "forgotten" arrivals (seen markers that left with them)
        self.dropped: Counter[str] = Counter()

    def identity(self, anonymous_id: str) -> Identity | None:
        value = self._get(_PROFILE + id_part(anonymous_id))
        return None if value is None else Identity(tuple(orjson.loads(value)))

    def unconfirmed(self, anonymous_id: str) -> str | None:
        """The identity A was bound to that the merge limit has not confirmed yet."""
        value = self._get(_UNCONFIRMED + id_part(anonymous_id))
        return None if value is None else value.decode()

    def confirmed(self, anonymous_id: str, identity: str) -> None:
        """The merge limit answered for ``identity``: A's events need not be kept for it."""
        key = _UNCONFIRMED + id_part(anonymous_id)
        if self._get(key) == identity.encode():
            self._set(key, None)

    def seen(self, anonymous_id: str, event_id: str) -> bool:
        return self._get(_SEEN + id_part(anonymous_id) + event_id.encode()) is not None

    def forget(self, anonymous_id: str) -> list[str]:
        """Remove everything state holds of ``anonymous_id`` (an erasure); return the ids
        of the events it had seen or held, for the warehouses to delete."""
        anon = id_part(anonymous_id)
        seen = self._merged(_SEEN + anon)
        event_ids = {key[1 + len(anon) :].decode() for key in seen}
        for key, value in self._merged(_HELD + anon).items():
            held = _decode_held(key, value)
            event_ids.add(held.event_id)
            self._set_held(anon, key[-_SEQ.size :], None)
        for key in seen:
            self._set(key, None)
        self._set_identity(anon, None)
        for key in (_COUNT + anon, _UNCONFIRMED + anon):
            if self._get(key) is not None:
                self._set(key, None)
        self._unindex_identity(anon)
        return sorted(event_ids)

    def forget_identity(self, anonymous_id: str) -> None:
        anon = id_part(anonymous_id)
        self._set_identity(anon, None)
        if self._get(_UNCONFIRMED + anon) is not None:
            self._set(_UNCONFIRMED + anon, None)
        self._unindex_identity(anon)

    def _unindex_identity(self, anon: bytes) -> None:
        identified = self._get(_IDENTIFIED + anon)
        if identified is not None:
            self._set(_IDENTIFIED + anon, None)
            self._set(_IDENTIFIED_INDEX + identified + anon, None)

    def rehold(self, anonymous_id: str, held: Held) -> None:
        self._set_held(id_part(anonymous_id), _SEQ.pack(held.seq), _encode_held(held))

    def identified_as(self, value: str) -> list[str]:
        """The anonymous ids whose identity holds ``value`` (one prefix scan)."""
        prefix = _BY_VALUE + id_part(value)
        return sorted(key[len(prefix) + 2 :].decode() for key in self._merged(prefix))

    def _set_identity(self, anon: bytes, identity: Identity | None) -> None:
        """A's identity (None: none), and the index of its values."""
        indexed = [] if identity is None else [v for v in identity.values if v is not None]
        new_keys = [_BY_VALUE + id_part(str(value)) + anon for value in indexed]  # may raise
        old = self._get(_PROFILE + anon)
        if old is not None:
            for value in orjson.loads(old):
                if value is not None:
                    self._set(_BY_VALUE + id_part(str(value)) + anon, None)
        if identity is None:
            if old is not None:
                self._set(_PROFILE + anon, None)
            return
        self._set(_PROFILE + anon, orjson.dumps(list(identity.values)))
        for key in new_keys:
            self._set(key, b"")

    def _merged(self, prefix: bytes) -> dict[bytes, bytes]:
        """Every key under ``prefix``: the store's, with this batch's changes applied (for
        a held prefix, from its own index of pending changes, not all of them)."""
        if prefix[:1] == _HELD:
            pending = self._pending_held.get(prefix, {})
        else:
            pending = {k: v for k, v in self._pending.items() if k.startswith(prefix)}
        found = dict(self._store.scan(prefix))
        for key, value in pending.items():
            if value is None:
                found.pop(key, None)
            else:
                found[key] = value
        return found

    def held(self, anonymous_id: str, before: int | None = None) -> list[Held]:
        """The events ``anonymous_id`` holds, oldest first; with ``before``, only those that
        arrived before that offset (a batch processed again after a crash may find the
        holds of its own later events in state already: they are not there yet)."""
        prefix = _HELD + id_part(anonymous_id)
        end = None if before is None else prefix + _SEQ.pack(max(before, 0))
        found = self._merged(prefix)
        return [_decode_held(k, found[k]) for k in sorted(found) if end is None or k < end]

    def apply(
        self, anonymous_id: str, event_id: str, outcome: Outcome, seq: int, timestamp_ms: int
    ) -> None:
        """Buffer the state changes an outcome asks for; ``seq`` and ``timestamp_ms`` are
        the record's (its offset, and its time: when its state expires)."""
        anon = id_part(anonymous_id)
        if outcome.identity is not None:
            self._set_identity(anon, outcome.identity)
            if self._retention.identity_ttl_ms is not None:
                self._unindex_identity(anon)
                stamp = _TS.pack(max(timestamp_ms, 0))
                self._set(_IDENTIFIED + anon, stamp)
                self._set(_IDENTIFIED_INDEX + stamp + anon, b"")
        if outcome.claim is not None:
            self._set(_UNCONFIRMED + anon, claim_key(outcome.claim).encode())
        count = self._held_count(anon)
        for held in outcome.rehold:
            self._set_held(anon, _SEQ.pack(held.seq), _encode_held(held))
        if outcome.hold is not None:
            cap = self._retention.max_held_per_id
            while cap is not None and count >= cap and self._drop_oldest_held(anon):
                count -= 1
                self.dropped["capped"] += 1
            self._set_held(anon, _SEQ.pack(outcome.hold.seq), _encode_held(outcome.hold))
            count += 1
        if outcome.hold is not None:
            self._set_held_count(anon, count)
        if outcome.mark_seen:
            encoded_id = event_id.encode()
            self._set(_SEEN + anon + encoded_id, b"")
            if self._retention.ttl_ms is not None:
                arrived = _TS.pack(max(timestamp_ms, 0)) + anon + _SEQ.pack(seq) + encoded_id
                self._set(_ARRIVED + arrived, b"")

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
        for key, _ in self._store.scan(_ARRIVED):
            (timestamp,) = _TS.unpack_from(key, 1)
            if timestamp >= cutoff or budget <= 0:
                return
            budget -= 1
            start = 1 + _TS.size
            length = int.from_bytes(key[start : start + 2], "big")
            anon = key[start : start + 2 + length]
            seq = key[start + 2 + length : start + 2 + length + _SEQ.size]
            event_id = key[start + 2 + length + _SEQ.size :]
            self._set(key, None)
            self._set(_SEEN + anon + event_id, None)
            self.dropped["forgotten"] += 1
            if self._get(_HELD + anon + seq) is not None:
                self._set_held(anon, seq, None)
                self._set_held_count(anon, self._held_count(anon) - 1)
                self.dropped["expired"] += 1

    def _expire_identities(self, now_ms: int, budget: int) -> int:
        """Forget identities set longer than the identity TTL ago; return what is left of
        ``budget``."""
        ttl = self._retention.identity_ttl_ms
        if ttl is None:
            return budget
        for key, _ in self._store.scan(_IDENTIFIED_INDEX):
            stamp = key[1 : 1 + _TS.size]
            if _TS.unpack(stamp)[0] >= now_ms - ttl or budget <= 0:
                break
            budget -= 1
            anon = key[1 + _TS.size :]
            self._set(key, None)
            if self._get(_IDENTIFIED + anon) == stamp:  # else set again since: not expired
                self._set(_IDENTIFIED + anon, None)
                self._set_identity(anon, None)
                if self._get(_UNCONFIRMED + anon) is not None:
                    self._set(_UNCONFIRMED + anon, None)
                self.dropped["identities_expired"] += 1
        return budget

    def changes(self) -> list[Change]:
        """Every buffered change, each key once with its last value, in a safe order.

        The changelog gets them in this order, and a crash may land any prefix of it (the
        batch is then processed again over what landed). Identities go before held events
        and new seen markers last: no prefix says "seen" for an event whose hold or
        identity it lacks (the event would count as a duplicate and its hold be lost), and
        no prefix holds events re-versioned by an identity it lacks (the re-run would
        amend them again, one version up). A prefix with an identity but not the holds it
        re-versioned makes the re-run emit nothing more: the first run's records stand.
        tests/unit/test_crash_consistency.py tries every prefix.
        """

        if self._ordered is None:  # batch order within a rank
            ranked: tuple[list[Change], ...] = ([], [], [], [])
            rank = _RANK.get
            for change in self._pending.items():
                key, value = change
                ranked[0 if value is None else rank(key[:1], 0)].append(change)
            self._ordered = [change for changes in ranked for change in changes]
        return self._ordered

    def _get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self._store.get(key)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._pending[key] = value
        self._ordered = None

    def _set_held(self, anon: bytes, seq: bytes, value: bytes | None) -> None:
        prefix = _HELD + anon
        key = prefix + seq
        self._set(key, value)
        self._pending_held.setdefault(prefix, {})[key] = value

    def _held_count(self, anon: bytes) -> int:
        value = self._get(_COUNT + anon)
        return 0 if value is None else int(_COUNT_VALUE.unpack(value)[0])

    def _set_held_count(self, anon: bytes, count: int) -> None:
        self._set(_COUNT + anon, _COUNT_VALUE.pack(count) if count > 0 else None)

    def _drop_oldest_held(self, anon: bytes) -> bool:
        """Forget the oldest event ``anon`` holds; False when it holds none."""
        prefix = _HELD + anon
        pending = self._pending_held.get(prefix, {})
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
