"""The stitching rules: what an event means, what to emit, what to keep.

This module is the pure core of retrostitch. It reads no clock, no disk and no network,
and imports no Kafka client, Faust, RocksDB or database driver (a test enforces that).
Each record goes through two steps:

    parse(raw, rules)                  -> Parsed      (or raises BadRecord)
    decide(parsed, memory, seq, rules) -> Outcome     (records to emit, state to change)

``Memory`` is what the state held for the event's anonymous id before it: the current
identity, whether this event id was seen, and, only when ``needs_held`` says so, the
events waiting for an identity. The caller (``streams.pipeline.stitch``) reads that from the
state store and applies the outcome; this module never touches storage.

The seed's example, anonymous id 1 and email a@b.com at event3 (policy ``retain``):

    input                         sink records (key = event id)
    event1 {anon 1}               event1 v1 anonymous  stitched_user_id "1"   (held)
    event2 {anon 1}               event2 v1 anonymous  stitched_user_id "1"   (held)
    event3 {anon 1, a@b.com}      event3 v1 identified stitched_user_id "a@b.com"
                                  event1 v2 amended    email a@b.com          (kept, v2)
                                  event2 v2 amended    email a@b.com          (kept, v2)
    event4 {anon 1, a@b.com}      event4 v1 identified stitched_user_id "a@b.com"
    event5 {anon 1}               event5 v1 stitched   email a@b.com
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from streams.core.errors import BadRecord
from streams.core.persons import anchor_of, identifier_id
from streams.core.pointer import Pointer
from streams.core.record import Scalar, SinkRecord, Status, sink_record

__all__ = [
    "DEFAULT_JUNK_IDS",
    "DEFAULT_JUNK_PATTERN",
    "BadRecord",
    "Held",
    "Identity",
    "Memory",
    "Outcome",
    "Parsed",
    "Policy",
    "RecognitionRules",
    "anonymous_id_of",
    "claim_key",
    "decide",
    "derived_event_id",
    "needs_held",
    "parse",
    "stitchable",
    "unmerged",
]

#: Anonymous (and identification) values that mean "nobody": trackers send these when
#: a cookie is missing or a variable was never set. Compared stripped and lowercased.
DEFAULT_JUNK_IDS = frozenset(
    {"", "null", "undefined", "none", "nan", "anonymous", "0", "[object object]"}
)
#: Ids made only of zeros and dashes: the null UUID of Snowplow's anonymised tracking.
DEFAULT_JUNK_PATTERN = r"[0-]+"


class Policy(StrEnum):
    """What a new, different identity on an anonymous id does to its earlier events."""

    RETAIN = "retain"  # earlier events keep the identity they were given (the default)
    LATEST = "latest"  # Snowplow's "latest user id wins": earlier events get the newest one


@dataclass(frozen=True, slots=True)
class RecognitionRules:
    """Where to find the ids in an event, and how to stitch (Jitsu's ``users_recognition``)."""

    enabled: bool = True
    #: where the anonymous id may be, in order: the first usable value wins (Jitsu's
    #: /user/anonymous_id, Segment's /anonymousId, Snowplow's /domain_userid, ...)
    anonymous_ids: tuple[Pointer, ...] = (Pointer.parse("/user/anonymous_id"),)
    identification: tuple[Pointer, ...] = (Pointer.parse("/user/id"), Pointer.parse("/user/email"))
    event_id: Pointer = Pointer.parse("/eventn_ctx_event_id")
    junk_ids: frozenset[str] = DEFAULT_JUNK_IDS
    junk_pattern: re.Pattern[str] | None = re.compile(DEFAULT_JUNK_PATTERN)
    policy: Policy = Policy.RETAIN
    #: Jitsu's bot filter: an event whose user agent (at this node) contains one of the
    #: markers, compared in lower case, passes through: never held, never stitched
    bot_user_agent: Pointer | None = Pointer.parse("/user_agent")
    bot_markers: tuple[str, ...] = ("bot", "crawl")
    #: the merge limit is on (``streams.core.merges``): an identification that binds an
    #: anonymous id to an identity it was not bound to applies at once and claims its place
    #: (``Outcome.claim``); until the claim is confirmed, stitched events are kept too, so
    #: that a refusal can emit them again as they arrived
    claims: bool = False
    #: persons are resolved (``streams.core.persons``): every event's sink record names the
    #: identifier whose person it is (``person_key``)
    persons: bool = False
    #: the largest event taken (bytes): a larger one is a dead letter, so that whatever the
    #: worker writes of it (sink record, held copy, changelog record, with ids of up to
    #: 64 KiB each added) stays below Kafka's default record limit of 1 MB. None: no limit
    max_event_bytes: int | None = 600_000

    def is_bot(self, event: dict[str, Any]) -> bool:
        """Whether the event's user agent holds one of the bot markers."""
        if self.bot_user_agent is None or not self.bot_markers:
            return False
        agent = self.bot_user_agent.get(event)
        if not isinstance(agent, str):
            return False
        folded = agent.lower()
        return any(marker in folded for marker in self.bot_markers)

    def is_junk(self, text: str) -> bool:
        """Whether an id means nobody (``junk_ids``, ``junk_pattern``)."""
        folded = text.strip().lower()
        if folded in self.junk_ids:
            return True
        return (
            self.junk_pattern is not None and self.junk_pattern.fullmatch(text.strip()) is not None
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """The identification values of one person, one slot per identification node."""

    values: tuple[Scalar | None, ...]

    @property
    def user_id(self) -> Scalar:
        """Snowplow's stitched user id: the first non-null identification value."""
        return next(value for value in self.values if value is not None)

    def conflicts_with(self, other: Identity) -> bool:
        """True when some node holds a different value in each: another person."""
        return any(
            mine is not None and theirs is not None and mine != theirs
            for mine, theirs in zip(self.values, other.values, strict=True)
        )

    def merged(self, newer: Identity) -> Identity:
        """This identity completed by a newer, non-conflicting one (id, then id + email)."""
        return Identity(
            tuple(
                theirs if theirs is not None else mine
                for mine, theirs in zip(self.values, newer.values, strict=True)
            )
        )


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one input record means."""

    raw: bytes
    event: dict[str, Any]
    event_id: str
    anonymous_id: str | None  # None: missing or junk
    identity: Identity | None  # None: not an identifying event
    bot: bool = False  # a bot's event: passed through, whatever its ids


@dataclass(frozen=True, slots=True)
class Held:
    """An event kept in state: an anonymous one waiting for an identity (``retain``), or,
    under ``latest``, any event of an anonymous id, so that each newer identity becomes
    its stitched user id too."""

    seq: int  # orders the held events of one anonymous id by arrival
    event_id: str
    raw: bytes
    version: int  # the version it was last emitted with


@dataclass(frozen=True, slots=True)
class Memory:
    """What state knows about the event's anonymous id and event id."""

    identity: Identity | None = None
    seen: bool = False
    held: Sequence[Held] = ()  # only filled when needs_held() asked for it
    unconfirmed: bool = False  # the identity's claim (merge limit) is not confirmed yet


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to emit and what to change in state for one input record."""

    records: tuple[SinkRecord, ...]
    identity: Identity | None = None  # the anonymous id's new identity, None: unchanged
    hold: Held | None = None  # keep this event
    rehold: tuple[Held, ...] = ()  # keep these held events, now with these versions
    mark_seen: bool = False  # remember the event id, so a re-delivery emits nothing
    conflict: bool = False  # a different identity arrived on an identified anonymous id
    #: the merge limit must confirm that this identity may take the anonymous id (it is
    #: applied meanwhile: a refusal un-merges it)
    claim: Identity | None = None
    duplicate: bool = False  # the event id was seen before: nothing emitted
    #: events that carried an identification of their own, emitted again with a newer
    #: identity as their stitched user id (``latest``)
    restitched: int = 0


def parse(raw: bytes, rules: RecognitionRules) -> Parsed:
    """Decode one record and find its ids; raise BadRecord saying what is wrong."""
    if rules.max_event_bytes is not None and len(raw) > rules.max_event_bytes:
        raise BadRecord(
            f"event of {len(raw):,} bytes is larger than stitcher.max_event_bytes "
            f"({rules.max_event_bytes:,})"
        )
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"not valid JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise BadRecord(f"not a JSON object but a JSON {type(event).__name__}")
    return Parsed(
        raw=raw,
        event=event,
        event_id=_event_id(event, rules),
        anonymous_id=anonymous_id_of(event, rules),
        identity=_own_identity(event, rules),
        bot=rules.is_bot(event),
    )


def _own_identity(event: dict[str, Any], rules: RecognitionRules) -> Identity | None:
    """The identification the event itself carries; None: an anonymous event."""
    values = tuple(_identification_value(p.get(event), rules) for p in rules.identification)
    return Identity(values) if any(value is not None for value in values) else None


def stitchable(parsed: Parsed, rules: RecognitionRules) -> bool:
    """Whether the rules apply to this event at all (else it passes through, untouched)."""
    return rules.enabled and parsed.anonymous_id is not None and not parsed.bot


def needs_held(parsed: Parsed, memory: Memory, rules: RecognitionRules) -> bool:
    """Whether deciding on ``parsed`` needs the held events of its anonymous id."""
    if not stitchable(parsed, rules) or parsed.identity is None or memory.seen:
        return False
    if rules.policy is Policy.RETAIN:
        return memory.identity is None
    _, changed, _ = _next_identity(memory.identity, parsed.identity)
    return changed


def decide(parsed: Parsed, memory: Memory, seq: int, rules: RecognitionRules) -> Outcome:
    """Apply the rules to one record, given what state knew before it.

    ``seq`` is a number that grows with arrival order within the anonymous id's partition
    (the record's offset); it orders held events and carries no other meaning.
    """
    if not stitchable(parsed, rules):
        return Outcome(records=(_as_is(parsed, Status.PASSTHROUGH),))
    if memory.seen:
        return Outcome(records=(), duplicate=True)
    if parsed.identity is not None:
        return _identifying(parsed, memory, seq, rules)
    if memory.identity is not None:
        stitched = _amended(parsed, memory.identity, 1, Status.STITCHED, rules)
        kept = rules.policy is Policy.LATEST or memory.unconfirmed
        keep = Held(seq, parsed.event_id, parsed.raw, 1) if kept else None
        return Outcome(records=(stitched,), hold=keep, mark_seen=True)
    return Outcome(
        records=(
            _as_is(parsed, Status.ANONYMOUS, person=_person(parsed.anonymous_id, None, rules)),
        ),
        hold=Held(seq, parsed.event_id, parsed.raw, 1),
        mark_seen=True,
    )


def claim_key(identity: Identity) -> str:
    """What the merge limit counts anonymous ids per: the identity's stitched user id."""
    return str(identity.user_id)


def _identifying(parsed: Parsed, memory: Memory, seq: int, rules: RecognitionRules) -> Outcome:
    assert parsed.identity is not None
    assert parsed.anonymous_id is not None
    claimed = rules.claims and _claimed(memory.identity, parsed.identity)
    claim = parsed.identity if claimed else None
    identity, changed, conflict = _next_identity(memory.identity, parsed.identity)
    # as it arrived, under the anonymous id's identity: one that this event only completes
    # (an email to a known user id) keeps the stitched user id of the id's other rows
    person = _person(parsed.anonymous_id, identity, rules)
    records = [_as_is(parsed, Status.IDENTIFIED, identity.user_id, person)]
    held = sorted(memory.held, key=lambda h: h.seq)
    if rules.policy is Policy.RETAIN:
        # The first identity amends every waiting event; a later one applies from its own
        # event onward, so nothing earlier is re-emitted. Amended events stay in state
        # (until the TTL), so that an un-merge can emit them again as they arrived.
        first = memory.identity is None
        if first:
            records += [_re_emit(h, identity, parsed.anonymous_id, rules)[0] for h in held]
        amended = tuple(Held(h.seq, h.event_id, h.raw, h.version + 1) for h in held)
        return Outcome(
            records=tuple(records),
            identity=identity if changed else None,
            rehold=amended if first else (),
            mark_seen=True,
            conflict=conflict,
            claim=claim,
        )
    # Snowplow's "latest user id wins": every event state holds for the anonymous id, the
    # identified ones too (this one is kept now), follows each new identity.
    rehold = tuple(Held(h.seq, h.event_id, h.raw, h.version + 1) for h in held) if changed else ()
    re_emitted = (
        [_re_emit(h, identity, parsed.anonymous_id, rules) for h in held] if changed else []
    )
    return Outcome(
        records=(*records, *(record for record, _ in re_emitted)),
        identity=identity if changed else None,
        hold=Held(seq, parsed.event_id, parsed.raw, 1),
        rehold=rehold,
        mark_seen=True,
        conflict=conflict,
        claim=claim,
        restitched=sum(own for _, own in re_emitted),
    )


def _claimed(current: Identity | None, incoming: Identity) -> bool:
    """Whether ``incoming`` would bind the anonymous id to an identity it is not bound to."""
    return current is None or claim_key(current) != claim_key(incoming)


def _next_identity(current: Identity | None, incoming: Identity) -> tuple[Identity, bool, bool]:
    """(new identity, whether it changed, whether it is a conflict)."""
    if current is None:
        return incoming, True, False
    if current.conflicts_with(incoming):
        return incoming, True, True
    merged = current.merged(incoming)
    return merged, merged != current, False


def _re_emit(
    held: Held, identity: Identity, anonymous_id: str, rules: RecognitionRules
) -> tuple[SinkRecord, bool]:
    """A held event one version up under ``identity``, and whether it carried an
    identification of its own (only ``latest`` keeps those)."""
    event = orjson.loads(held.raw)
    own = rules.policy is Policy.LATEST and _own_identity(event, rules) is not None
    version = held.version + 1
    amended = _amended_event(
        event, held.event_id, anonymous_id, identity, version, Status.AMENDED, rules
    )
    return amended, own


def _amended(
    parsed: Parsed, identity: Identity, version: int, status: Status, rules: RecognitionRules
) -> SinkRecord:
    assert parsed.anonymous_id is not None
    return _amended_event(
        parsed.event, parsed.event_id, parsed.anonymous_id, identity, version, status, rules
    )


def _amended_event(
    event: dict[str, Any],
    event_id: str,
    anonymous_id: str,
    identity: Identity,
    version: int,
    status: Status,
    rules: RecognitionRules,
) -> SinkRecord:
    if rules.policy is Policy.RETAIN:  # Jitsu's: the identity written into the event
        for pointer, value in zip(rules.identification, identity.values, strict=True):
            if value is not None:
                pointer.set(event, value)
    # Snowplow's (``latest``): every event as it arrived, the identity in stitched_user_id
    person = _person(anonymous_id, identity, rules)
    return sink_record(event_id, anonymous_id, identity.user_id, version, status, event, person)


def _person(
    anonymous_id: str | None, identity: Identity | None, rules: RecognitionRules
) -> str | None:
    """The id of the identifier whose person a row of ``anonymous_id`` is, given the
    ``identity`` it was emitted with (None: persons off). Under ``retain`` it is that
    identity's first value (a shared device's earlier rows stay with the first person),
    else the anonymous id; under ``latest`` every row follows its device."""
    if not rules.persons or anonymous_id is None:
        return None
    if identity is None or rules.policy is Policy.LATEST:
        return identifier_id(anonymous_id)
    return identifier_id(anchor_of(identity.values))


def _as_is(
    parsed: Parsed, status: Status, stitched: Scalar | None = None, person: str | None = None
) -> SinkRecord:
    """The event as it arrived; its stitched user id ``stitched``, else its own identity's,
    else its anonymous id."""
    if stitched is not None:
        stitched_user_id: Scalar | None = stitched
    elif parsed.identity is not None:
        stitched_user_id = parsed.identity.user_id
    else:
        stitched_user_id = parsed.anonymous_id
    return sink_record(
        parsed.event_id,
        parsed.anonymous_id,
        stitched_user_id,
        1,
        status,
        orjson.Fragment(parsed.raw),
        person,
    )


def unmerged(held: Held, anonymous_id: str, rules: RecognitionRules) -> SinkRecord:
    """A held event emitted again as it arrived, one version up (its identity undone): its
    stitched user id is the identification it carried itself (``latest`` keeps identified
    events too), else the anonymous id."""
    latest = rules.policy is Policy.LATEST  # retain keeps anonymous-origin events only
    own = _own_identity(orjson.loads(held.raw), rules) if latest else None
    return sink_record(
        held.event_id,
        anonymous_id,
        anonymous_id if own is None else own.user_id,
        held.version + 1,
        Status.UNMERGED,
        orjson.Fragment(held.raw),
        _person(anonymous_id, None, rules),
    )


def _event_id(event: dict[str, Any], rules: RecognitionRules) -> str:
    value = rules.event_id.get(event)
    if value is None or (isinstance(value, str) and not value.strip()):
        return derived_event_id(event)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRecord(
        f"event id at {rules.event_id} must be a string or an integer, "
        f"got a JSON {type(value).__name__}"
    )


def derived_event_id(event: dict[str, Any]) -> str:
    """A deterministic id for an event that has none: a hash of its canonical JSON."""
    canonical = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def anonymous_id_of(event: dict[str, Any], rules: RecognitionRules) -> str | None:
    """The first usable value among the anonymous id nodes; None when none has one."""
    for pointer in rules.anonymous_ids:
        value = pointer.get(event)
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue  # absent, null, or an object/array/float that cannot name a device
        text = str(value)
        if not rules.is_junk(text):
            return text
    return None


def _identification_value(value: Any, rules: RecognitionRules) -> Scalar | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return None if rules.is_junk(str(value)) else value
