"""How stitching state is laid out in a key-value store, and a batch's view of it.

Three key families per anonymous id ``A`` (``L(x)`` is the UTF-8 length of x in 2 bytes,
which keeps every prefix unambiguous whatever bytes an id contains):

    b"p" L(A) A              -> the current identity: a JSON list, one value per node
    b"h" L(A) A seq(8 bytes) -> a held event: version(4) L(event id) event id raw-event
    b"s" L(A) A event-id     -> b"": this event id was processed (re-deliveries skip it)

Holding one more event is one put; releasing k events is one prefix scan over exactly
those k keys and k deletes: no value grows with a visitor's history, and the changelog
carries only the keys that changed.

``PartitionState`` reads through to the store and buffers every change of a batch in
memory (later records of the batch see the earlier ones); ``changes()`` hands them over
to be written in one batch and sent to the changelog.
"""

from __future__ import annotations

import struct

import orjson

from streams.errors import StateError
from streams.rules import Held, Identity, Outcome
from streams.store import Change, KeyValueStore

__all__ = ["HELD_PREFIX", "MAX_ID_BYTES", "PartitionState", "StateError"]

MAX_ID_BYTES = 0xFFFF
_PROFILE, _HELD, _SEEN = b"p", b"h", b"s"
HELD_PREFIX = _HELD  # every held (waiting) event key starts with it
_SEQ = struct.Struct(">Q")
_HELD_HEAD = struct.Struct(">IH")  # version, event id length


def _part(text: str) -> bytes:
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

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        self._pending: dict[bytes, bytes | None] = {}
        self._pending_held: dict[bytes, dict[bytes, bytes | None]] = {}

    def identity(self, anonymous_id: str) -> Identity | None:
        value = self._get(_PROFILE + _part(anonymous_id))
        return None if value is None else Identity(tuple(orjson.loads(value)))

    def seen(self, anonymous_id: str, event_id: str) -> bool:
        return self._get(_SEEN + _part(anonymous_id) + event_id.encode()) is not None

    def held(self, anonymous_id: str) -> list[Held]:
        prefix = _HELD + _part(anonymous_id)
        found = dict(self._store.scan(prefix))
        for key, value in self._pending_held.get(prefix, {}).items():
            if value is None:
                found.pop(key, None)
            else:
                found[key] = value
        return [_decode_held(key, found[key]) for key in sorted(found)]

    def apply(self, anonymous_id: str, event_id: str, outcome: Outcome) -> None:
        """Buffer the state changes an outcome asks for."""
        anon = _part(anonymous_id)
        if outcome.identity is not None:
            self._set(_PROFILE + anon, orjson.dumps(list(outcome.identity.values)))
        if outcome.hold is not None:
            self._set_held(anon, outcome.hold, _encode_held(outcome.hold))
        for held in outcome.release:
            self._set_held(anon, held, None)
        for held in outcome.rehold:
            self._set_held(anon, held, _encode_held(held))
        if outcome.mark_seen:
            self._set(_SEEN + anon + event_id.encode(), b"")

    def changes(self) -> list[Change]:
        """Every buffered change, each key once with its last value."""
        return list(self._pending.items())

    def _get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self._store.get(key)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._pending[key] = value

    def _set_held(self, anon: bytes, held: Held, value: bytes | None) -> None:
        prefix = _HELD + anon
        key = prefix + _SEQ.pack(held.seq)
        self._pending[key] = value
        self._pending_held.setdefault(prefix, {})[key] = value
