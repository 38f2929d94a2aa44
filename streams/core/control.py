"""Commands to the stitcher, sent as records on the control topic: erase and un-merge.

    {"erase": {"anonymous_id": "X"}}      forget X: its identity, held events, seen events
    {"erase": {"identity": "a@b.com"}}    the same for every anonymous id identified so
    {"unmerge": {"anonymous_id": "X"}}    X forgets its identity; events of X it amended
                                          are emitted again as they arrived

Every command goes to every partition of the control topic (``commands_for``): each
partition's worker applies it to the ids its own state holds, so a command needs no
knowledge of how producers partitioned the events. Like ``streams.core.rules``, this module
reads no clock, disk or network.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import orjson

from streams.core.errors import BadRecord

__all__ = ["Command", "Verb", "encode", "parse_command"]


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
    for field, value in values.items():
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise BadRecord(f"{name}: {field} must be a non-empty string or an integer")
    anonymous_id, identity = values.get("anonymous_id"), values.get("identity")
    return Command(
        verb,
        None if anonymous_id is None else str(anonymous_id),
        None if identity is None else str(identity),
    )
