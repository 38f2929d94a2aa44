"""The merge limit: how many anonymous ids one identity may absorb within a window.

A shared test account, or a tracker that sends one placeholder user id for everybody,
would otherwise stitch thousands of visitors into one "mega-person". With the limit on
(``users_recognition.max_anonymous_ids_per_identity``), the partition of an anonymous id
cannot know how many others an identity took, so it asks the partition of the identity,
which keeps that count (topics in streams.worker.app):

    stitch     --claim-->    <app_id>-claims, keyed by identity      --> arbitrate
    arbitrate  --answer-->   <app_id>-answers, the claim's partition --> stitch
               --refused-->  topics.quarantine: the identifying event, reason in a header
    stitch     --release-->  (un-merge, erase) the anonymous id no longer counts
               --forget-->   (erase by identity) the identity's record goes

The identification applies at once, as without the limit, so below the limit nothing
changes: the same records, versions and latency. Until the answer comes, the anonymous
id's stitched events are kept in state; a confirmation ends that, a refusal un-merges the
anonymous id (as ``retrostitch unmerge`` does: its amended and stitched events are
emitted again as they arrived, one version up) and a copy of the identifying event goes
to the quarantine topic. A duplicate claim (a batch processed again) gets the same
answer; an answer for an identity the anonymous id no longer has changes nothing.

A claim record is one JSON line, a newline, and the identifying event byte for byte;
the other records are one JSON line. An identity's state (the table ``identity-claims``):

    b"c" L(K) K A        -> when A was granted K (ms, 8 bytes)
    b"t" ts(8) L(K) K A  -> b"": the same, by time: what expiry reads, oldest first

``L(x)`` is ``streams.state.partition.id_part``. Nothing here does I/O.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from streams.core.errors import BadRecord
from streams.state.partition import id_part
from streams.state.store import Change, KeyValueStore

__all__ = [
    "Answer",
    "Claim",
    "ClaimState",
    "Forget",
    "MergeLimit",
    "Release",
    "answers_topic",
    "claims_topic",
    "encode",
    "parse_answer",
    "parse_claims_record",
]

_ENTRY, _ARRIVED = b"c", b"t"
_TS = struct.Struct(">Q")
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class MergeLimit:
    """How many distinct anonymous ids one identity may absorb per window (README)."""

    #: None: no limit (identifications apply at once, no claims are sent)
    max_anonymous_ids: int | None = 100
    #: an anonymous id counts for this long after its grant, then leaves the identity's state
    window_ms: int = 30 * DAY_MS
    #: the most grants one batch lets expire per partition
    expire_per_batch: int = 20_000


@dataclass(frozen=True, slots=True)
class Claim:
    """An anonymous id's request to take an identity (key: ``rules.claim_key``)."""

    identity: str
    anonymous_id: str
    partition: int  # of the stitch source: where the answer must go
    offset: int  # of the identifying event there
    source: str  # topic[partition]@offset of the identifying event, for the quarantine
    event: bytes  # the identifying event, as it arrived
    timestamp: int  # of the identifying event (ms): the window counts from it


@dataclass(frozen=True, slots=True)
class Release:
    """The anonymous id no longer counts for the identity (un-merged or erased)."""

    identity: str
    anonymous_id: str


@dataclass(frozen=True, slots=True)
class Forget:
    """Everything the identity's state holds goes (erased by identity)."""

    identity: str


@dataclass(frozen=True, slots=True)
class Answer:
    """Whether ``identity`` may take ``anonymous_id`` (to the claim's stitch partition)."""

    anonymous_id: str
    identity: str
    granted: bool


def claims_topic(app_id: str) -> str:
    return f"{app_id}-claims"


def answers_topic(app_id: str) -> str:
    return f"{app_id}-answers"


def encode(message: Claim | Release | Forget | Answer) -> bytes:
    """One claims (or answers) record's value."""
    if isinstance(message, Claim):
        head: dict[str, Any] = {
            "claim": {
                "identity": message.identity,
                "anonymous_id": message.anonymous_id,
                "partition": message.partition,
                "offset": message.offset,
                "source": message.source,
                "timestamp": message.timestamp,
            }
        }
        return orjson.dumps(head) + b"\n" + message.event
    if isinstance(message, Answer):
        verb = "confirm" if message.granted else "refuse"
        target = {"identity": message.identity, "anonymous_id": message.anonymous_id}
        return orjson.dumps({verb: target})
    if isinstance(message, Release):
        target = {"identity": message.identity, "anonymous_id": message.anonymous_id}
        return orjson.dumps({"release": target})
    return orjson.dumps({"forget": {"identity": message.identity}})


def parse_claims_record(raw: bytes | None) -> Claim | Release | Forget:
    """A record of the claims topic; BadRecord says what is wrong with it."""
    verb, fields, event = _split(raw)
    if verb == "claim":
        return Claim(
            _text(fields, "identity"),
            _text(fields, "anonymous_id"),
            _number(fields, "partition"),
            _number(fields, "offset"),
            _text(fields, "source"),
            _event(event),
            _number(fields, "timestamp"),
        )
    if verb == "release":
        return Release(_text(fields, "identity"), _text(fields, "anonymous_id"))
    if verb == "forget":
        return Forget(_text(fields, "identity"))
    raise BadRecord(f"unknown claims record {verb!r}; known: claim, release, forget")


def parse_answer(raw: bytes | None) -> Answer:
    verb, fields, _ = _split(raw)
    if verb not in ("confirm", "refuse"):
        raise BadRecord(f"an answers record is confirm or refuse, not {verb!r}")
    return Answer(_text(fields, "anonymous_id"), _text(fields, "identity"), verb == "confirm")


def _split(raw: bytes | None) -> tuple[str, dict[str, Any], bytes | None]:
    line, newline, rest = (raw or b"").partition(b"\n")
    try:
        head = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"merge-limit record is not valid JSON: {exc}") from exc
    if not isinstance(head, dict) or len(head) != 1:
        raise BadRecord("merge-limit record must be one object with one verb")
    ((verb, fields),) = head.items()
    if not isinstance(fields, dict):
        raise BadRecord(f"{verb}: expected an object of fields")
    return str(verb), fields, rest if newline else None


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise BadRecord(f"merge-limit record: {name} must be a string")
    return value


def _number(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRecord(f"merge-limit record: {name} must be a whole number")
    return value


def _event(event: bytes | None) -> bytes:
    if not event:
        raise BadRecord("merge-limit record carries no event after its first line")
    return event


class ClaimState:
    """One partition's identities, as seen by one batch: store reads plus pending changes."""

    def __init__(self, store: KeyValueStore, limit: MergeLimit) -> None:
        self._store = store
        self._limit = limit
        self._pending: dict[bytes, bytes | None] = {}
        self._pending_entries: dict[bytes, dict[bytes, bytes | None]] = {}  # per identity
        #: "claims_expired": grants that left with the window
        self.dropped: Counter[str] = Counter()

    def claim(self, claim: Claim, now_ms: int) -> bool:
        """Whether ``claim.identity`` may take ``claim.anonymous_id`` at ``now_ms``; a grant
        is recorded. An anonymous id granted within the window is granted again."""
        prefix = _ENTRY + id_part(claim.identity)
        cutoff = now_ms - self._limit.window_ms
        anon = id_part(claim.anonymous_id)
        current = 0
        for key, value in self._entries(prefix).items():
            (granted_at,) = _TS.unpack(value)
            if granted_at <= cutoff:
                continue  # out of the window: expiry removes it
            if key == prefix + anon:
                return True
            current += 1
        maximum = self._limit.max_anonymous_ids
        if maximum is not None and current >= maximum:
            return False
        self._remove(prefix + anon)  # an old grant, out of the window
        self._set_entry(prefix + anon, _TS.pack(now_ms))
        self._pending[_ARRIVED + _TS.pack(now_ms) + prefix[1:] + anon] = b""
        return True

    def release(self, identity: str, anonymous_id: str) -> None:
        self._remove(_ENTRY + id_part(identity) + id_part(anonymous_id))

    def forget(self, identity: str) -> None:
        for key in self._entries(_ENTRY + id_part(identity)):
            self._remove(key)

    def count(self, identity: str) -> int:
        """How many anonymous ids ``identity`` holds (in or out of the window)."""
        return len(self._entries(_ENTRY + id_part(identity)))

    def expire(self, now_ms: int) -> None:
        """Drop grants older than the window at ``now_ms``, oldest first, a bounded number."""
        cutoff = now_ms - self._limit.window_ms
        budget = self._limit.expire_per_batch
        for key, _ in self._store.scan(_ARRIVED):
            (granted_at,) = _TS.unpack_from(key, 1)
            if granted_at > cutoff or budget <= 0:
                return
            budget -= 1
            self._pending[key] = None
            entry = _ENTRY + key[1 + _TS.size :]
            value = self._get(entry)
            if value is not None and _TS.unpack(value)[0] == granted_at:
                self._set_entry(entry, None)
                self.dropped["claims_expired"] += 1

    def changes(self) -> list[Change]:
        """Every buffered change, in an order any prefix of which is safe (a crash may land
        a prefix in the changelog): a grant's time index before the grant, a grant's
        removal before its index's, so that no grant is ever left without the index
        that expires it."""

        def rank(change: Change) -> int:
            key, value = change
            if key[:1] == _ARRIVED:
                return 0 if value is not None else 2
            return 1

        return sorted(self._pending.items(), key=rank)

    def _remove(self, entry: bytes) -> None:
        value = self._get(entry)
        if value is None:
            return
        self._set_entry(entry, None)
        self._pending[_ARRIVED + value + entry[1:]] = None

    def _set_entry(self, entry: bytes, value: bytes | None) -> None:
        self._pending[entry] = value
        identity_end = 3 + int.from_bytes(entry[1:3], "big")
        self._pending_entries.setdefault(entry[:identity_end], {})[entry] = value

    def _entries(self, prefix: bytes) -> dict[bytes, bytes]:
        """The grants of one identity (``prefix``: its entry prefix): stored, then pending."""
        found = dict(self._store.scan(prefix))
        for key, value in self._pending_entries.get(prefix, {}).items():
            if value is None:
                found.pop(key, None)
            else:
                found[key] = value
        return found

    def _get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self._store.get(key)
