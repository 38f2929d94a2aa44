"""How state is laid out as byte keys, and the codecs of its values.

``L(x)`` is ``id_part(x)``: the UTF-8 length of x in 2 bytes, then its bytes, which keeps
every prefix unambiguous whatever bytes an id contains. The stitch state of an anonymous
id ``A`` (table ``stitch-state``, ``streams.state.partition``):

    b"p" L(A) A              -> the current identity: a JSON list, one value per node
    b"h" L(A) A seq(8 bytes) -> a held event: version(4) L(event id) event id raw-event
    b"n" L(A) A              -> how many events A holds (4 bytes), absent when none
    b"s" L(A) A event-id     -> b"": this event id was processed (re-deliveries skip it)
    b"t" ts(8) L(A) A seq(8) event-id -> b"": when that event arrived (ms, the record's
                                timestamp): what expiry reads, oldest first
    b"u" L(A) A              -> the identity (its claim key) the merge limit has not
                                confirmed yet for A, absent otherwise
    b"x" L(V) V L(A) A       -> b"": A's identity holds the value V (erasure by identity)
    b"q" L(A) A              -> when A's identity was last set (ms, 8 bytes); and
    b"i" ts(8) L(A) A        -> b"", the same by time: with an identity TTL only
    b"m" L(A) A              -> A's user mapping row: its version, when A was first seen,
                                first and last identified (ms, 8 bytes each, 0: not
                                yet); with identity records on only, while A has an
                                identity or holds events

The merge limit's state of an identity ``K`` (table ``identity-claims``,
``streams.state.claims``):

    b"c" L(K) K L(A) A       -> when A was granted K (ms, 8 bytes)
    b"t" ts(8) L(K) K L(A) A -> b"": the same, by time: what expiry reads, oldest first

Holding one more event is a few puts; amending k events is one prefix scan over exactly
those k keys and k puts: no value grows with a visitor's history, and the changelog
carries only the keys that changed.
"""

from __future__ import annotations

import struct

from streams.core.errors import StateError
from streams.core.rules import Held

__all__ = [
    "ARRIVED",
    "BY_VALUE",
    "CLAIM_ARRIVED",
    "CLAIM_ENTRY",
    "COUNT",
    "COUNT_VALUE",
    "HELD",
    "IDENTIFIED",
    "IDENTIFIED_INDEX",
    "MAPPING",
    "MAPPING_VALUE",
    "MAX_ID_BYTES",
    "PROFILE",
    "SEEN",
    "SEQ",
    "TS",
    "UNCONFIRMED",
    "decode_held",
    "encode_held",
    "event_id_bytes",
    "id_part",
]

MAX_ID_BYTES = 0xFFFF
PROFILE, HELD, COUNT, SEEN, ARRIVED = b"p", b"h", b"n", b"s", b"t"
UNCONFIRMED = b"u"
IDENTIFIED, IDENTIFIED_INDEX = b"q", b"i"
BY_VALUE = b"x"
MAPPING = b"m"
CLAIM_ENTRY, CLAIM_ARRIVED = b"c", b"t"
SEQ = struct.Struct(">Q")
TS = struct.Struct(">Q")
COUNT_VALUE = struct.Struct(">I")
MAPPING_VALUE = struct.Struct(">QQQQ")
_HELD_HEAD = struct.Struct(">IH")  # version, event id length


def id_part(text: str) -> bytes:
    """An id as a key part, ``L(x)`` above. Raises StateError for an id longer than
    ``MAX_ID_BYTES`` in UTF-8 (the record that carries it is a dead letter)."""
    data = text.encode()
    if len(data) > MAX_ID_BYTES:
        raise StateError(f"id of {len(data)} bytes is longer than {MAX_ID_BYTES}: {text[:40]!r}…")
    return len(data).to_bytes(2, "big") + data


def event_id_bytes(event_id: str) -> bytes:
    """An event id as it ends a key (seen markers, arrivals) and heads a held event's
    value. Raises StateError for one longer than ``MAX_ID_BYTES`` in UTF-8, as ``id_part``
    does: the held event's value records its length in 2 bytes."""
    data = event_id.encode()
    if len(data) > MAX_ID_BYTES:
        raise StateError(
            f"event id of {len(data)} bytes is longer than {MAX_ID_BYTES}: {event_id[:40]!r}…"
        )
    return data


def encode_held(held: Held) -> bytes:
    """A held event's value (its key carries its seq)."""
    event_id = held.event_id.encode()
    return _HELD_HEAD.pack(held.version, len(event_id)) + event_id + held.raw


def decode_held(key: bytes, value: bytes) -> Held:
    """The held event stored at ``key`` (``HELD L(A) A seq``) with ``value``."""
    version, length = _HELD_HEAD.unpack_from(value)
    start = _HELD_HEAD.size
    event_id = value[start : start + length].decode()
    (seq,) = SEQ.unpack_from(key, len(key) - SEQ.size)
    return Held(seq, event_id, value[start + length :], version)
