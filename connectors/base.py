"""What every warehouse connector shares: the warehouse seam, rejected rows, batch splitting.

``Warehouse`` is all the consumer loop (``connectors.runner``) needs of a warehouse: one
method writes a batch of rows, version-guarded, and returns the rows it refused; one
deletes what a batch's erase records name. ``write_or_split`` finds the refused records
of a batch by halving it, so that one bad record costs a few writes, not the batch.
``WarehouseKind`` is all the rest of the product knows of a warehouse, declared once in
the warehouse's module and listed in ``connectors.registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from connectors.errors import describe
from connectors.rows import Erasure, Layout, PersonMerge, Row
from streams.settings import Section, Settings

__all__ = [
    "Answers",
    "Rejected",
    "ResolvesPersons",
    "Warehouse",
    "WarehouseKind",
    "identities_layout",
    "layout_of",
    "persons_layout",
    "write_or_split",
]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record a warehouse refused (or that is no row), for the dead-letter topic."""

    raw: bytes
    key: bytes | None
    source: str
    reason: str


class Warehouse(Protocol):
    """One warehouse's writes; every call may raise ``WarehouseUnavailable`` (retried)."""

    name: str
    #: where it writes, for the logs: server, database and table, never a password
    where: str

    def write(self, rows: Sequence[Row]) -> list[Rejected]:
        """Upsert the rows (highest version wins); return those the warehouse refused.

        Raises WarehouseUnavailable when nothing could be written for now.
        """
        ...

    def erase(self, erasures: Sequence[Erasure]) -> None:
        """Delete every row each erasure names. Raises WarehouseUnavailable, like write."""
        ...

    def open(self) -> None:
        """Connect and make the table now, at the connector's start: a configuration the
        warehouse refuses (no such database or role, a wrong password, no permission)
        raises ConfigError naming the setting; an outage raises WarehouseUnavailable."""
        ...

    def beside(self, layout: Layout) -> Warehouse:
        """The same warehouse for another table (the user mapping table), in the same
        place, with the same credentials."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Answers(Protocol):
    """A warehouse that answers one read-only statement with its rows as tab-separated text
    (``retrostitch query``); anything else is a ValueError saying why."""

    def answer(self, statement: str) -> str: ...


@runtime_checkable
class ResolvesPersons(Protocol):
    """A warehouse that keeps every row's person right (``users_recognition.persons``)."""

    def resolve_persons(self, identifiers: Sequence[str], merges: Sequence[PersonMerge]) -> None:
        """After a batch's rows and persons rows landed: apply its person merges, in order,
        then give the rows of each persons row's identifier that row's person. Raises
        WarehouseUnavailable, like write."""
        ...


@dataclass(frozen=True, slots=True)
class WarehouseKind:
    """One warehouse as the CLI, the status ports, the settings and the README know it."""

    #: ``retrostitch sink <name>``; the consumer group ``<app_id>-sink-<name>``
    name: str
    #: how the README names it
    title: str
    #: its connector's status port where ``stitcher.status_port`` is not set: one of its
    #: own, so that each connector starts beside a worker and a replay on one host
    status_port: int
    #: the client library, as the README names it
    driver: str
    #: the modules of that library it imports (import-linter keeps them out of the core)
    driver_modules: tuple[str, ...]
    #: its own settings (``Settings.section(section.kind)``), read by every process
    section: Section[Any]
    #: its connector's writer of the events table, from the settings
    connect: Callable[[Settings], Warehouse]


def write_or_split(
    rows: Sequence[Row],
    write: Callable[[Sequence[Row]], None],
    refused: tuple[type[BaseException], ...],
    warehouse: str,
) -> list[Rejected]:
    """Write the rows; where the warehouse refuses a record, split the batch in halves until
    the refused records stand alone (a few extra writes per bad record) and return them."""
    if not rows:
        return []
    try:
        write(rows)
        return []
    except refused as exc:
        if len(rows) == 1:
            row = rows[0]
            reason = f"{warehouse} refused the row: {describe(exc)}"
            return [Rejected(row.raw, str(row.key[0]).encode(), row.source, reason)]
    middle = len(rows) // 2
    return write_or_split(rows[:middle], write, refused, warehouse) + write_or_split(
        rows[middle:], write, refused, warehouse
    )


def layout_of(settings: Settings, *, persons: bool = False) -> Layout:
    """How the settings turn sink records into rows (``connectors.rows``); ``persons``:
    the rows name their person (a warehouse that resolves persons, with them on)."""
    return Layout(
        identification=settings.recognition.identification,
        event_time=settings.warehouse.event_time_node,
        key=settings.warehouse.primary_key_fields,
        table=settings.warehouse.table,
        person_columns=persons,
    )


def persons_layout(settings: Settings) -> Layout:
    """The persons table: one row per identifier, ``<table>_persons``."""
    warehouse = settings.warehouse
    return Layout(
        identification=settings.recognition.identification,
        event_time=warehouse.event_time_node,
        key=("identifier_id",),
        table=f"{warehouse.table}_persons",
        persons_table=True,
    )


def identities_layout(settings: Settings, *, persons: bool = False) -> Layout:
    """The user mapping table: one row per anonymous id (``connectors.rows``);
    ``persons``: its rows name their person, as event rows do."""
    warehouse = settings.warehouse
    return Layout(
        identification=settings.recognition.identification,
        event_time=warehouse.event_time_node,
        key=("anonymous_id",),
        table=warehouse.identities_table or f"{warehouse.table}_identities",
        identities=True,
        person_columns=persons,
    )
