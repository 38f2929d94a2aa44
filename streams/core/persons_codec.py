"""The persons topic's records: one JSON object each, its verb the only key.

    {"attach": {"to": [0, "u-7"], "anonymous_id": "a1", "values": [[0, "u-7"], [1, "kim@x"]],
                "at": 1700000000000, "source": "events[3]@41"}}
    {"answer": {"to": [1, "kim@x"], "winner": [0, "u-7"], "ticket": 1, "accepted": true}}
    {"erase": {"to": [1, "kim@x"], "at": 1700000000000}}

A key is ``[node index, value]`` (``streams.core.persons.Key``); a record keyed by
``to`` goes to the partition of that value. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from streams.core.errors import BadRecord
from streams.core.persons import (
    Adopt,
    Answer,
    Attach,
    Devices,
    Drop,
    Erase,
    Find,
    Join,
    Key,
    Message,
    Reparent,
    Resume,
    Task,
    Yield,
)

__all__ = ["as_object", "encode", "from_object", "parse_message"]


def encode(message: Message) -> bytes:
    """A persons record's value (``parse_message`` reads it back)."""
    return orjson.dumps(as_object(message))


def as_object(message: Message) -> dict[str, Any]:
    """The message as the JSON object its record holds (``from_object`` reads it back)."""
    fields: dict[str, Any] = {"to": list(message.to)}
    if isinstance(message, Attach):
        fields |= {
            "anonymous_id": message.anonymous_id,
            "values": [list(v) for v in message.values],
        }
        fields |= {"at": message.at, "source": message.source, "event": message.event}
        if message.partition >= 0:
            fields["partition"] = message.partition
    elif isinstance(message, Find):
        fields |= {"origin": list(message.origin), "task": _task(message.task)}
    elif isinstance(message, Yield):
        fields |= {"winner": list(message.winner), "task": _task(message.task)}
    elif isinstance(message, Join):
        members = [list(m) for m in sorted(message.members)]
        fields |= {"loser": list(message.loser), "members": members, "ticket": message.ticket}
        fields |= {"task": _task(message.task)}
        if message.name:
            fields["name"] = message.name
        if message.devices:
            fields["devices"] = [list(d) for d in message.devices]
    elif isinstance(message, Answer):
        fields |= {"winner": list(message.winner), "ticket": message.ticket}
        fields |= {"accepted": message.accepted}
    elif isinstance(message, Reparent):
        fields |= {"root": list(message.root)}
        if message.former is not None:
            fields["former"] = list(message.former)
    elif isinstance(message, Erase):
        fields |= {"at": message.at}
    elif isinstance(message, Drop):
        fields |= {"value": list(message.value)}
    elif isinstance(message, Adopt):
        members = [list(m) for m in sorted(message.members)]
        fields |= {"former": list(message.former), "members": members}
        fields |= {"name": message.name, "at": message.at}
        if message.devices:
            fields["devices"] = [list(d) for d in message.devices]
    else:
        fields |= {"task": _task(message.task)}
    return {_VERBS[type(message)]: fields}


def _task(task: Task) -> dict[str, Any]:
    fields = {
        "anonymous_id": task.anonymous_id,
        "anchor": list(task.anchor),
        "pending": [list(v) for v in task.pending],
        "at": task.at,
        "source": task.source,
        "event": task.event,
    }
    if task.partition >= 0:
        fields["partition"] = task.partition
    return fields


def parse_message(raw: bytes | None) -> Message:
    """A record of the persons topic; BadRecord says what is wrong with it."""
    try:
        head = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"persons record is not valid JSON: {exc}") from exc
    return from_object(head)


def from_object(head: Any) -> Message:
    """The message a decoded persons record holds; BadRecord says what is wrong."""
    if not isinstance(head, dict) or len(head) != 1:
        raise BadRecord("persons record must be one object with one verb")
    ((verb, fields),) = head.items()
    if verb not in _PARSERS or not isinstance(fields, dict):
        raise BadRecord(f"unknown persons record {verb!r}; known: {', '.join(_PARSERS)}")
    return _PARSERS[verb](_Fields(verb, fields))


class _Fields:
    """A record's fields, read with a check of each one's type."""

    def __init__(self, verb: str, fields: dict[str, Any]) -> None:
        self.verb, self.fields = verb, fields

    def _bad(self, name: str, what: str) -> BadRecord:
        return BadRecord(f"persons record {self.verb}: {name} must be {what}")

    def text(self, name: str, fields: dict[str, Any] | None = None) -> str:
        value = (self.fields if fields is None else fields).get(name)
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        return value

    def number(self, name: str, fields: dict[str, Any] | None = None) -> int:
        value = (self.fields if fields is None else fields).get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(name, "a whole number")
        return value

    def key(self, name: str, fields: dict[str, Any] | None = None) -> Key:
        return self._key((self.fields if fields is None else fields).get(name), name)

    def _key(self, value: Any, name: str) -> Key:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not isinstance(value[0], int)
            or isinstance(value[0], bool)
            or not isinstance(value[1], str)
        ):
            raise self._bad(name, "[node index, value]")
        return (value[0], value[1])

    def keys(self, name: str, fields: dict[str, Any] | None = None) -> tuple[Key, ...]:
        value = (self.fields if fields is None else fields).get(name)
        if not isinstance(value, list):
            raise self._bad(name, "a list of [node index, value]")
        return tuple(self._key(item, name) for item in value)

    def task(self) -> Task:
        task = self.fields.get("task")
        if not isinstance(task, dict):
            raise self._bad("task", "an object")
        return Task(
            self.text("anonymous_id", task),
            self.key("anchor", task),
            self.keys("pending", task),
            self.number("at", task),
            self.text("source", task),
            self.text("event", task),
            self.number("partition", task) if "partition" in task else -1,
        )

    def devices(self) -> Devices:
        """The optional ``devices``: [[anonymous id, ms, identity id], ...]."""
        value = self.fields.get("devices", [])
        if not isinstance(value, list) or not all(
            isinstance(d, list)
            and len(d) == 3
            and isinstance(d[0], str)
            and isinstance(d[1], int)
            and not isinstance(d[1], bool)
            and isinstance(d[2], str)
            for d in value
        ):
            raise self._bad("devices", "a list of [anonymous id, ms, identity id]")
        return tuple((d[0], d[1], d[2]) for d in value)


def _attach(f: _Fields) -> Attach:
    values = f.keys("values")
    if not values:
        raise BadRecord("persons record attach: values must not be empty")
    return Attach(
        f.key("to"),
        f.text("anonymous_id"),
        values,
        f.number("at"),
        f.text("source"),
        f.text("event"),
        f.number("partition") if "partition" in f.fields else -1,
    )


def _answer(f: _Fields) -> Answer:
    accepted = f.fields.get("accepted")
    if not isinstance(accepted, bool):
        raise BadRecord("persons record answer: accepted must be true or false")
    return Answer(f.key("to"), f.key("winner"), f.number("ticket"), accepted)


_VERBS: dict[type, str] = {
    Attach: "attach",
    Find: "find",
    Yield: "yield",
    Join: "join",
    Answer: "answer",
    Reparent: "reparent",
    Resume: "resume",
    Erase: "erase",
    Drop: "drop",
    Adopt: "adopt",
}
_PARSERS: dict[str, Callable[[_Fields], Message]] = {
    "attach": _attach,
    "find": lambda f: Find(f.key("to"), f.key("origin"), f.task()),
    "yield": lambda f: Yield(f.key("to"), f.key("winner"), f.task()),
    "join": lambda f: Join(
        f.key("to"),
        f.key("loser"),
        frozenset(f.keys("members")),
        f.number("ticket"),
        f.task(),
        f.text("name") if "name" in f.fields else "",
        f.devices(),
    ),
    "answer": _answer,
    "reparent": lambda f: Reparent(
        f.key("to"), f.key("root"), f.key("former") if "former" in f.fields else None
    ),
    "resume": lambda f: Resume(f.key("to"), f.task()),
    "erase": lambda f: Erase(f.key("to"), f.number("at")),
    "drop": lambda f: Drop(f.key("to"), f.key("value")),
    "adopt": lambda f: Adopt(
        f.key("to"),
        f.key("former"),
        frozenset(f.keys("members")),
        f.text("name"),
        f.number("at"),
        f.devices(),
    ),
}
