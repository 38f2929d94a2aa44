"""A connector's batch, and the order in which it lands in the warehouse's two tables.

``Batch`` holds what was read since the last flush, sorted by what becomes of it (rows of
the events table, rows of the user mapping table, erase records, records that are no
row), and per partition the offset to commit once it has landed. ``Tables.land`` writes
it in the one order that is safe to repeat:

    1. the rows into the events table (``warehouse.write``), rejected rows returned;
    2. the identity records into the user mapping table (the warehouse's ``beside``);
    3. the erase records on every table, after the rows, so that a row of the same batch
       is deleted too (in the persons table, the identifier's row);
    4. with persons on, where the warehouse resolves them (``ResolvesPersons``): the
       persons rows into the persons table, then the person merges and the re-labelling
       of the rows of each identifier (``resolve_persons``).

Each step goes through ``until_it_lands`` (``connectors.backpressure``), which retries
while the warehouse is away; a step that gives up (stopped, or partitions revoked) ends
the landing with nothing committed, and the whole batch is written again later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from confluent_kafka import KafkaException, TopicPartition

from connectors.base import (
    Rejected,
    ResolvesPersons,
    Warehouse,
    identities_layout,
    layout_of,
    persons_layout,
)
from connectors.errors import BadSinkRecord
from connectors.rows import Erasure, Layout, PersonMerge, Row, read_sink_record
from streams.settings import Settings

__all__ = ["Batch", "Landed", "Tables", "UntilItLands"]

T = TypeVar("T")


class UntilItLands(Protocol):
    """Retries ``write`` (of ``rows`` rows) while the warehouse is away: its result once the
    warehouse takes it, None if it gave up meanwhile (``Backpressure.until_it_lands``)."""

    def __call__(self, write: Callable[[], T], rows: int) -> T | None: ...


@dataclass(slots=True)
class Batch:
    """The records read since the last flush, and the offsets that commit them."""

    rows: list[Row] = field(default_factory=list)
    mappings: list[Row] = field(default_factory=list)  # rows of the user mapping table
    persons: list[Row] = field(default_factory=list)  # rows of the persons table
    merges: list[PersonMerge] = field(default_factory=list)
    erasures: list[Erasure] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)  # no row: straight to dead letters
    #: per partition, the offset after the last record read: committed once it has landed
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: when the last flush began: the batch is due ``batch_max_seconds`` after it
    started: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return (
            len(self.rows)
            + len(self.mappings)
            + len(self.persons)
            + len(self.merges)
            + len(self.rejected)
            + len(self.erasures)
        )

    def due(self, max_seconds: float) -> bool:
        return time.monotonic() - self.started >= max_seconds

    def commits(self) -> list[TopicPartition]:
        """The offsets to commit once the batch is in the warehouse."""
        return [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]

    def clear(self) -> None:
        """Forget the records (landed, or to be read again); the flush's time stays."""
        self.rows, self.mappings, self.erasures, self.rejected = [], [], [], []
        self.persons, self.merges = [], []
        self.offsets = {}


@dataclass(frozen=True, slots=True)
class Landed:
    """What the warehouse refused of a batch that landed: events rows, mapping rows,
    persons rows."""

    rejected: list[Rejected]
    refused: list[Rejected]
    persons: list[Rejected] = field(default_factory=list)


class Tables:
    """A warehouse's events table and its user mapping table beside it (same place, same
    credentials), and how a sink record becomes a row of one of them."""

    def __init__(self, settings: Settings, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        resolves = settings.persons.enabled and isinstance(warehouse, ResolvesPersons)
        self.layout = layout_of(settings, persons=resolves)
        self.identities_layout = identities_layout(settings, persons=resolves)
        self.identities = warehouse.beside(self.identities_layout)
        #: the persons table, where the warehouse resolves persons (else persons records
        #: are no rows, and the events table names no person)
        self.persons_layout: Layout | None = persons_layout(settings) if resolves else None
        self.persons = (
            None if self.persons_layout is None else warehouse.beside(self.persons_layout)
        )

    def read(self, message: Any, batch: Batch) -> None:
        """Add a consumed message to the batch; one that is no row is kept as rejected."""
        if message.error() is not None:
            raise KafkaException(message.error())
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        source = f"{topic}[{partition}]@{offset}"
        batch.offsets[(topic, partition)] = offset + 1
        value = message.value()
        try:
            if value is None:
                raise BadSinkRecord("sink record has no value")
            read = read_sink_record(
                value, source, self.layout, self.identities_layout, self.persons_layout
            )
            if isinstance(read, Erasure):
                batch.erasures.append(read)
            elif isinstance(read, PersonMerge):
                batch.merges.append(read)
            elif read is not None:
                kept = batch.mappings if read.identities else batch.rows
                (batch.persons if read.persons else kept).append(read)
        except BadSinkRecord as exc:
            batch.rejected.append(Rejected(value or b"", message.key(), source, exc.reason))

    def land(self, batch: Batch, until_it_lands: UntilItLands) -> Landed | None:
        """Write the batch in its order (module docstring); None if a step gave up."""
        rows, mappings = batch.rows, batch.mappings
        rejected = until_it_lands(lambda: self.warehouse.write(rows) if rows else [], len(rows))
        if rejected is None:
            return None
        refused: list[Rejected] | None = []
        if mappings:
            refused = until_it_lands(lambda: self.identities.write(mappings), len(mappings))
        if refused is None:
            return None
        if batch.erasures and until_it_lands(lambda: self._erase(batch.erasures), 0) is None:
            return None
        persons = self.persons
        people: list[Rejected] | None = []
        if persons is not None and (batch.persons or batch.merges):
            rows = batch.persons
            people = until_it_lands(lambda: persons.write(rows) if rows else [], len(rows))
            if people is None or until_it_lands(lambda: self._resolve(batch), 0) is None:
                return None
        return Landed(rejected, refused, people or [])

    def close(self) -> None:
        self.warehouse.close()
        self.identities.close()
        if self.persons is not None:
            self.persons.close()

    def _resolve(self, batch: Batch) -> bool:
        assert isinstance(self.warehouse, ResolvesPersons)
        identifiers = [str(row.key[0]) for row in batch.persons]
        self.warehouse.resolve_persons(identifiers, batch.merges)
        return True

    def _erase(self, erasures: Sequence[Erasure]) -> bool:
        self.warehouse.erase(erasures)
        self.identities.erase(erasures)
        if self.persons is not None:
            self.persons.erase(erasures)
        return True
