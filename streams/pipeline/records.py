"""The records a flow reads and what it cannot process: no Kafka here.

A feed (``streams.worker.feed``) delivers ``InputRecord``s; a flow turns a record it can
never process into a ``DeadLetter`` that names the record and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.core.errors import BadRecord, StateError
from streams.pipeline.counts import Counters

__all__ = ["DeadLetter", "InputRecord", "by_topic", "dead_letter", "value_of"]


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One record as a feed delivers it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0  # ms since the epoch, the record's; 0 or less: none known

    @property
    def source(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that can never be processed, and why."""

    record: InputRecord
    reason: str


def dead_letter(record: InputRecord, exc: BadRecord | StateError, counts: Counters) -> DeadLetter:
    """``record`` as a dead letter with the reason ``exc`` gives (counted)."""
    counts.on_dead_letter()
    return DeadLetter(record, exc.reason if isinstance(exc, BadRecord) else str(exc))


def value_of(record: InputRecord) -> bytes:
    """The record's value; a tombstone is a bad record."""
    if record.value is None:
        raise BadRecord("record has no value (a tombstone on the event topic)")
    return record.value


def by_topic(records: Iterable[InputRecord], *topics: str) -> dict[str, list[InputRecord]]:
    """Records of ``topics`` under their names, the others under ""; each in order."""
    groups: dict[str, list[InputRecord]] = {name: [] for name in ("", *topics)}
    for record in records:
        groups[record.topic if record.topic in groups else ""].append(record)
    return groups
