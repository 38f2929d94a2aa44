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
the other records are one JSON line. This module holds the messages and their codec;
an identity's count is ``streams.state.claims.ClaimState``. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from streams.core.clock import DAY_MS
from streams.core.errors import BadRecord

__all__ = [
    "Answer",
    "Claim",
    "Forget",
    "MergeLimit",
    "Release",
    "answers_topic",
    "claims_topic",
    "encode",
    "parse_answer",
    "parse_claims_record",
    "refusal",
]


@dataclass(frozen=True, slots=True)
class MergeLimit:
    """How many distinct anonymous ids one identity may absorb per window (docs/rules.md:
    the merge limit)."""

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
    """The internal topic of claims, keyed by identity."""
    return f"{app_id}-claims"


def answers_topic(app_id: str) -> str:
    """The internal topic of answers, on the partition each claim came from."""
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
    """A record of the answers topic; BadRecord says what is wrong with it."""
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


def refusal(limit: MergeLimit) -> str:
    """Why the merge limit refused an identification: the quarantined record's reason."""
    days = limit.window_ms / DAY_MS
    return (
        f"its identity already took {limit.max_anonymous_ids} other anonymous ids within "
        f"{days:g} days (users_recognition.max_anonymous_ids_per_identity): not applied"
    )
