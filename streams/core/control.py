"""Commands to the stitcher, sent as records on the control topic: erase and un-merge.

    {"erase": {"anonymous_id": "X"}}      forget X: its identity, held events, seen events
    {"erase": {"identity": "a@b.com"}}    the same for every anonymous id identified so
    {"unmerge": {"anonymous_id": "X"}}    X forgets its identity; events of X it amended
                                          are emitted again as they arrived

Every command goes to every partition of the control topic (``commands_for``): each
partition's worker applies it to the ids its own state holds, so a command needs no
knowledge of how producers partitioned the events. Like ``streams.core.rules``, this module
reads no clock, disk or network.

An erasure also holds against every later copy of what it erased (``Erasures``): an event of
the erased anonymous id, or carrying the erased identification value, whose time is not
after the erasure's, is never emitted again: a replay of the input into fresh state, a late
or re-delivered copy. A worker learns the erasures of the whole control topic before it
reads any event, and each new one as it comes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

import orjson

from streams.core.errors import BadRecord

__all__ = ["Command", "Erasures", "Verb", "encode", "parse_command"]


class Verb(StrEnum):
    """What a command does."""

    ERASE = "erase"
    UNMERGE = "unmerge"


@dataclass(frozen=True, slots=True)
class Command:
    """One command: a verb and its target (an anonymous id, or an identity for erase)."""

    verb: Verb
    anonymous_id: str | None = None  # exactly one of the two is set
    identity: str | None = None

    def __post_init__(self) -> None:
        if (self.anonymous_id is None) == (self.identity is None):
            raise BadRecord("a command names either an anonymous_id or an identity")
        if self.verb is Verb.UNMERGE and self.anonymous_id is None:
            raise BadRecord("unmerge names an anonymous_id")


def encode(command: Command) -> bytes:
    """A command's record value (``parse_command`` reads it back)."""
    target = (
        {"anonymous_id": command.anonymous_id}
        if command.anonymous_id is not None
        else {"identity": command.identity}
    )
    return orjson.dumps({command.verb.value: target})


def parse_command(raw: bytes | None) -> Command:
    """A control record's command; BadRecord says what is wrong with it."""
    try:
        document = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"control record is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or len(document) != 1:
        raise BadRecord('control record must be one command, e.g. {"erase": {"anonymous_id": …}}')
    ((name, target),) = document.items()
    try:
        verb = Verb(name)
    except ValueError:
        known = ", ".join(v.value for v in Verb)
        raise BadRecord(f"unknown command {name!r}; known: {known}") from None
    if not isinstance(target, dict) or set(target) - {"anonymous_id", "identity"}:
        raise BadRecord(f"{name} takes an object with anonymous_id or identity")
    values = {k: v for k, v in target.items() if v is not None}
    for name_of, value in values.items():
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise BadRecord(f"{name}: {name_of} must be a non-empty string or an integer")
    anonymous_id, identity = values.get("anonymous_id"), values.get("identity")
    return Command(
        verb,
        None if anonymous_id is None else str(anonymous_id),
        None if identity is None else str(identity),
    )


@dataclass(slots=True)
class Erasures:
    """Until when (ms) each erased anonymous id and identification value is erased. Kept
    as digests, so that a worker's memory holds none of what was erased; small (one entry
    per erasure), and empty, as it nearly always is, an event costs one truth test."""

    _until: dict[bytes, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self._until)

    def add(self, command: Command, at: int) -> None:
        """An erase command given at ``at`` (ms): what it names up to then is erased."""
        if command.verb is not Verb.ERASE:
            return
        if command.anonymous_id is not None:
            self.erase_anonymous_id(command.anonymous_id, at)
        else:
            self._keep(_digest(b"v", str(command.identity)), at)

    def erase_anonymous_id(self, anonymous_id: str, until: int) -> None:
        self._keep(_digest(b"a", anonymous_id), until)

    def covers(
        self, anonymous_id: str | None, values: tuple[object, ...], at: int
    ) -> tuple[bool, int] | None:
        """Whether an event of time ``at``, of ``anonymous_id`` and carrying the
        identification ``values``, is erased: (by one of its values, until when), or None."""
        if anonymous_id is not None:
            until = self._until.get(_digest(b"a", anonymous_id))
            if until is not None and at <= until:
                return False, until
        for value in values:
            if value is not None:
                until = self._until.get(_digest(b"v", str(value)))
                if until is not None and at <= until:
                    return True, until
        return None

    def _keep(self, key: bytes, until: int) -> None:
        if until > self._until.get(key, -1):
            self._until[key] = until


def _digest(kind: bytes, text: str) -> bytes:
    return kind + hashlib.blake2b(text.encode(), digest_size=16).digest()
