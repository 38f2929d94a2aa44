"""Sink records as warehouse rows: fixed columns, flattened event fields, column types.

Pure: no database, no Kafka. Every connector turns a batch of sink records into ``Row``s
here and asks ``Schema`` which columns to add or widen before they write.

    {"event_id": "e1", "anonymous_id": "1", "stitched_user_id": "a@b.com", "version": 2,
     "status": "amended", "event": {"user": {"anonymous_id": "1", "email": "a@b.com"},
                                    "page": {"url": "/"}, "_timestamp": "2024-05-01T10:00:00Z"}}
    ->  event_id='e1' anonymous_id='1' user_id=NULL user_email='a@b.com'
        stitched_user_id='a@b.com' event_time=2024-05-01 10:00:00+00 version=2
        status='amended' payload='{…}' page_url='/' user_anonymous_id='1' _timestamp='2024-…'

With persons on (``Layout.person_columns``), an event row also has ``person_key`` (the
identifier whose person it is) and ``person_id`` (that person, as the warehouse resolves
it; ``person_key`` until then). A ``person`` record is a row of the persons table
(``Layout.persons_table``), keyed on ``identifier_id``; a ``person_merge`` record is a
``PersonMerge``.

An ``identity`` record is a row of the user mapping table (``Layout.identities``), keyed on
the anonymous id, with fixed columns only:

    anonymous_id='1' user_id=NULL user_email='a@b.com' stitched_user_id='a@b.com'
    first_seen=… first_identified=… last_identified=… version=1714557600000
    status='identified'        (or 'anonymous'; 'erased' deletes the row)
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from connectors.errors import BadSinkRecord
from streams.core.pointer import Pointer
from streams.core.record import Status

__all__ = [
    "ColumnType",
    "Erasure",
    "Layout",
    "PersonMerge",
    "Row",
    "Schema",
    "cell",
    "column_name",
    "grouped_erasures",
    "read_sink_record",
    "table_columns",
    "to_row",
]

log = logging.getLogger(__name__)

MAX_COLUMN_NAME = 63  # PostgreSQL's identifier limit; ClickHouse has none lower


class ColumnType(StrEnum):
    """A column's type, as every warehouse names it in its own terms."""

    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    TEXT = "text"
    TIMESTAMP = "timestamp"
    JSON = "json"  # the whole event: the warehouse's JSON type, or a JSON string


def column_name(path: Sequence[str]) -> str:
    """Jitsu's flattening: ``/page/url`` -> ``page_url``; lower case, ``[a-z0-9_]`` only.

    Names longer than 63 characters keep a readable head and a hash of the whole path.
    """
    return _column_name(tuple(path))


@functools.lru_cache(maxsize=65536)  # a stream has few distinct paths; every row asks
def _column_name(path: tuple[str, ...]) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", "_".join(path).lower()) or "_"
    if len(name) > MAX_COLUMN_NAME:
        digest = hashlib.blake2b("/".join(path).encode(), digest_size=4).hexdigest()
        name = f"{name[: MAX_COLUMN_NAME - 9]}_{digest}"
    return name


#: the statuses of a mapping row (an identity record's ``mapping``)
MAPPINGS = frozenset({Status.IDENTIFIED, Status.ANONYMOUS, Status.ERASED})
#: the times of a mapping row (ms in the record, timestamps in the table)
MAPPING_TIMES = ("first_seen", "first_identified", "last_identified")
#: the text columns of a persons row, the key first
PERSON_COLUMNS = ("identifier_id", "kind", "value", "person_id")


@dataclass(frozen=True, slots=True)
class Layout:
    """The fixed columns of one table, derived from the settings: the events table, or
    (``identities``) the user mapping table, one row per anonymous id."""

    identification: tuple[Pointer, ...]
    event_time: Pointer
    key: tuple[str, ...] = ("event_id",)
    table: str = "events"
    identities: bool = False
    #: the rows (of the events or the mapping table) name their person (``person_key``,
    #: ``person_id``)
    person_columns: bool = False
    #: the persons table: one row per identifier, from ``person`` records
    persons_table: bool = False
    #: each identification pointer with its column name (asked for on every row)
    named: tuple[tuple[str, Pointer], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        named = tuple((_column_name(p.tokens), p) for p in self.identification)
        object.__setattr__(self, "named", named)  # a frozen dataclass's derived field

    @property
    def fixed(self) -> dict[str, ColumnType]:
        if self.persons_table:
            columns = dict.fromkeys(PERSON_COLUMNS, ColumnType.TEXT)
            columns["seen"] = ColumnType.TIMESTAMP
            return columns | {"version": ColumnType.INT, "status": ColumnType.TEXT}
        if self.identities:
            columns = {"anonymous_id": ColumnType.TEXT}
            columns |= {column_name(p.tokens): ColumnType.TEXT for p in self.identification}
            columns["stitched_user_id"] = ColumnType.TEXT
            columns |= dict.fromkeys(MAPPING_TIMES, ColumnType.TIMESTAMP)
            columns |= {"version": ColumnType.INT, "status": ColumnType.TEXT}
            if self.person_columns:
                columns |= {"person_key": ColumnType.TEXT, "person_id": ColumnType.TEXT}
            return columns
        columns = {"event_id": ColumnType.TEXT, "anonymous_id": ColumnType.TEXT}
        columns |= {column_name(p.tokens): ColumnType.TEXT for p in self.identification}
        columns |= {
            "stitched_user_id": ColumnType.TEXT,
            "event_time": ColumnType.TIMESTAMP,
            "version": ColumnType.INT,
            "status": ColumnType.TEXT,
            "payload": ColumnType.JSON,
        }
        if self.person_columns:
            columns |= {"person_key": ColumnType.TEXT, "person_id": ColumnType.TEXT}
        return columns

    @property
    def created(self) -> dict[str, ColumnType]:
        """The columns a table is made with: the fixed ones, plus any key column that is not
        one of them (as text)."""
        columns = self.fixed
        for name in self.key:
            columns.setdefault(name, ColumnType.TEXT)
        return columns

    def erased_by(self, erasure: Erasure) -> tuple[str, ...]:
        """The text columns whose value, equal to the erasure's, deletes a row (in the
        persons table, an identifier's ``value``, whatever its kind)."""
        if self.persons_table:
            return ("value",)
        if erasure.column == "anonymous_id":
            return ("anonymous_id",)
        return ("stitched_user_id", *(column_name(p.tokens) for p in self.identification))


@dataclass(frozen=True, slots=True)
class Erasure:
    """A sink record that is no row: delete every row whose ``column`` holds ``value``
    (``anonymous_id``, or ``identity``: ``stitched_user_id`` or an identification column)."""

    column: str
    value: str
    source: str  # topic[partition]@offset


@dataclass(frozen=True, slots=True)
class PersonMerge:
    """A sink record that is no row: every row of the person ``person_id``, of any age,
    now belongs to ``into`` (``status: person_merge``)."""

    person_id: str
    into: str
    version: int
    source: str  # topic[partition]@offset


@dataclass(frozen=True, slots=True)
class Row:
    """One sink record as a warehouse row: its key, its cells by column, where it came from."""

    values: dict[str, Any]
    version: int
    key: tuple[Any, ...]
    raw: bytes  # the sink record, for the dead-letter topic
    source: str  # topic[partition]@offset
    identities: bool = False  # a row of the user mapping table
    persons: bool = False  # a row of the persons table


def read_sink_record(
    raw: bytes,
    source: str,
    layout: Layout,
    identities: Layout | None = None,
    persons: Layout | None = None,
) -> Row | Erasure | PersonMerge | None:
    """One sink record: a row (of ``identities`` for an identity record, of ``persons`` for
    a person record; None without that layout), a person merge (None without ``persons``),
    or an erasure of many; BadSinkRecord says what is wrong."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadSinkRecord(f"sink record is not JSON: {exc}") from exc
    if isinstance(record, dict):
        status = record.get("status")
        if status == Status.ERASE:
            return _erasure(record, source)
        if status == Status.IDENTITY:
            return None if identities is None else _mapping_row(record, raw, source, identities)
        if status == Status.PERSON:
            return None if persons is None else _person_row(record, raw, source)
        if status == Status.PERSON_MERGE:
            return None if persons is None else _person_merge(record, source)
    return _row(record, raw, source, layout)


def grouped_erasures(
    layout: Layout, erasures: Iterable[Erasure]
) -> dict[tuple[str, ...], list[str]]:
    """The values to delete, by the columns that hold them (one statement each)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for erasure in erasures:
        values = groups.setdefault(layout.erased_by(erasure), [])
        if erasure.value not in values:
            values.append(erasure.value)
    return groups


def to_row(raw: bytes, source: str, layout: Layout) -> Row:
    """One sink record as a row; BadSinkRecord says why it cannot be one."""
    read = read_sink_record(raw, source, layout)
    if not isinstance(read, Row):
        raise BadSinkRecord("sink record is an erasure or an identity record, not a row")
    return read


def _erasure(record: dict[str, Any], source: str) -> Erasure:
    found = [(c, record.get(c)) for c in ("anonymous_id", "identity") if record.get(c) is not None]
    if len(found) != 1 or not isinstance(found[0][1], str) or not found[0][1]:
        raise BadSinkRecord("an erase record names one anonymous_id or identity, as a string")
    column, value = found[0]
    return Erasure(column, str(value), source)


def _version(record: dict[str, Any]) -> int:
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**63:
        raise BadSinkRecord(
            f"sink record version must be an integer from 1 to 2^63-1, got {version!r}"
        )
    return version


def _mapping_row(record: dict[str, Any], raw: bytes, source: str, layout: Layout) -> Row:
    anonymous_id = record.get("anonymous_id")
    if not isinstance(anonymous_id, str) or not anonymous_id:
        raise BadSinkRecord("an identity record names its anonymous_id, as a string")
    mapping = record.get("mapping")
    if mapping not in MAPPINGS:
        raise BadSinkRecord(
            f"an identity record's mapping is one of {', '.join(sorted(MAPPINGS))}, got {mapping!r}"
        )
    identification = record.get("identification")
    if not isinstance(identification, dict):
        raise BadSinkRecord("an identity record's identification is an object")
    version = _version(record)
    times = {name: _moment(record.get(name)) for name in MAPPING_TIMES}
    values = {
        "anonymous_id": anonymous_id,
        **{name: _text(p.get(identification)) for name, p in layout.named},
        "stitched_user_id": _text(record.get("stitched_user_id")),
        **times,
        "version": version,
        "status": str(mapping),
    }
    if layout.person_columns:
        values["person_key"] = values["person_id"] = _text(record.get("person_key"))
    return Row(values, version, (anonymous_id,), raw, source, identities=True)


def _person_row(record: dict[str, Any], raw: bytes, source: str) -> Row:
    texts = {name: record.get(name) for name in PERSON_COLUMNS}
    if not all(isinstance(value, str) and value for value in texts.values()):
        raise BadSinkRecord(f"a person record names its {', '.join(PERSON_COLUMNS)}, as strings")
    version = _version(record)
    values = {**texts, "seen": _moment(record.get("seen")), "version": version}
    values["status"] = Status.PERSON.value
    return Row(values, version, (texts["identifier_id"],), raw, source, persons=True)


def _person_merge(record: dict[str, Any], source: str) -> PersonMerge:
    person, into = record.get("person_id"), record.get("into")
    if not isinstance(person, str) or not person or not isinstance(into, str) or not into:
        raise BadSinkRecord("a person_merge record names its person_id and into, as strings")
    return PersonMerge(person, into, _version(record), source)


def _moment(ms: Any) -> datetime | None:
    """A mapping time (ms since the epoch; 0 or none: not known)."""
    if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
        return None
    return _timestamp(ms)


def _row(record: Any, raw: bytes, source: str, layout: Layout) -> Row:
    if not isinstance(record, dict) or not isinstance(record.get("event"), dict):
        raise BadSinkRecord("sink record is not an object with an 'event' object")
    version = _version(record)
    event: dict[str, Any] = record["event"]
    values: dict[str, Any] = {}
    _flatten(event, (), values)
    fixed = {
        "event_id": _text(record.get("event_id")),
        "anonymous_id": _text(record.get("anonymous_id")),
        **{name: _text(p.get(event)) for name, p in layout.named},
        "stitched_user_id": _text(record.get("stitched_user_id")),
        "event_time": _timestamp(layout.event_time.get(event)),
        "version": version,
        "status": _text(record.get("status")),
        "payload": orjson.dumps(event).decode(),
    }
    if layout.person_columns:
        person_key = _text(record.get("person_key"))
        fixed["person_key"] = fixed["person_id"] = person_key
    values |= fixed  # a flattened field never shadows a fixed column
    key = tuple(map(values.get, layout.key))
    if None in key:
        raise BadSinkRecord(f"sink record has no value for key column(s) {', '.join(layout.key)}")
    return Row(values, version, key, raw, source)


class _ColumnNames:
    """The column name of each field, by the path of the object that holds it: the names
    of a stream's few shapes are found with one dict lookup a field. At most ``limit``
    names are kept in all (as ``_column_name``'s cache): past it, against a hostile stream
    whose field names never repeat, a name is computed each time."""

    def __init__(self, limit: int) -> None:
        self._by_path: dict[tuple[str, ...], dict[str, str]] = {}
        self._room = limit

    def under(self, path: tuple[str, ...]) -> dict[str, str]:
        """The names known under ``path`` (a dict to read; ``name`` adds to it)."""
        names = self._by_path.get(path)
        if names is None:
            names = {}
            if self._room > 0:
                self._by_path[path] = names
        return names

    def name(self, names: dict[str, str], path: tuple[str, ...], field: str) -> str:
        """The column of ``field`` under ``path``, kept in ``names`` while there is room."""
        column = _column_name((*path, field))
        if self._room > 0:
            names[field] = column
            self._room -= 1
        return column


_NAMES = _ColumnNames(65536)


def _flatten(node: dict[str, Any], path: tuple[str, ...], into: dict[str, Any]) -> None:
    """Every scalar under ``node`` into ``into`` by column name; the first of a name wins.

    Arrays are kept as JSON text (Jitsu's rule), and an integer outside 64 bits as its
    decimal text: no warehouse column type holds it, and a text column is where it goes.
    """
    names = _NAMES.under(path)
    for name, value in node.items():
        kind = type(value)
        if kind is dict:
            _flatten(value, (*path, name), into)
        elif value is not None:
            column = names.get(name) or _NAMES.name(names, path, name)
            if column in into:
                continue
            if kind is list:
                value = orjson.dumps(value).decode()
            elif kind is int and not _MIN_INT <= value <= _MAX_INT:
                value = str(value)
            into[column] = value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _timestamp(value: Any) -> datetime | None:
    """An ISO 8601 string or epoch seconds/milliseconds, as an aware UTC time; else None."""
    try:
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)  # "Z" included, since Python 3.11
            if moment.tzinfo is UTC:
                return moment
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1  # an INT column's range (BIGINT, Int64)

#: the narrowest column type of each type of a row's value (a flattened field, whose ints
#: fit 64 bits: ``_flatten``); any other holds as text
_KINDS = {bool: ColumnType.BOOL, int: ColumnType.INT, float: ColumnType.FLOAT}


@dataclass(slots=True)
class Schema:
    """The columns a table has, and what a batch needs added or widened to text."""

    columns: dict[str, ColumnType]
    fixed: frozenset[str] = frozenset()  # made with the table, typed by the layout
    _warned: set[str] = field(default_factory=set)

    def plan(self, rows: Sequence[Row]) -> tuple[dict[str, ColumnType], list[str]]:
        """(new columns with their types, existing columns to widen to text), in the order
        the batch first shows them.

        Each distinct shape of row (its columns, the types of its values) is looked at
        once: a row's values are flattened fields, whose ints fit 64 bits (``_flatten``)."""
        new: dict[str, ColumnType] = {}
        widen: list[str] = []
        for name, kind in _value_types(rows):
            if name in self.fixed:
                continue
            seen = self.columns.get(name) or new.get(name)
            wanted = _KINDS.get(kind, ColumnType.TEXT)
            if seen is None:
                new[name] = wanted
            elif seen != wanted and not _fits(wanted, seen):
                if name in new:
                    new[name] = ColumnType.TEXT
                elif name not in widen:
                    widen.append(name)
                self._warn(name, seen, wanted)
        return new, widen

    def _warn(self, name: str, seen: ColumnType, wanted: ColumnType) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "column %r holds %s values and now a %s one: it becomes text", name, seen, wanted
            )

    def applied(self, new: dict[str, ColumnType], widen: Iterable[str]) -> None:
        self.columns |= new
        self.columns |= dict.fromkeys(widen, ColumnType.TEXT)


def _value_types(rows: Sequence[Row]) -> dict[tuple[str, type], None]:
    """Each (column, type of a value in it) of the rows, in the order they first show them:
    from each distinct shape of row, so that a batch of few shapes costs little more than
    one pass over its rows."""
    shapes = dict.fromkeys((tuple(r.values), tuple(map(type, r.values.values()))) for r in rows)
    return dict.fromkeys(p for names, kinds in shapes for p in zip(names, kinds, strict=True))


def _fits(value: ColumnType, column: ColumnType) -> bool:
    """Whether a value of one type goes into a column of another without a change."""
    return column is ColumnType.TEXT or (value is ColumnType.INT and column is ColumnType.FLOAT)


def table_columns(
    rows: Sequence[Row], names: Sequence[str], types: dict[str, ColumnType]
) -> list[list[Any]]:
    """The rows' values column by column, each as its column's type needs it (``cell``)."""
    columns = []
    for name in names:
        column = [row.values.get(name) for row in rows]
        kind = types[name]
        if kind is ColumnType.TEXT:
            column = [v if v is None or type(v) is str else cell(v, kind) for v in column]
        elif kind is ColumnType.FLOAT:
            column = [float(v) if type(v) is int else v for v in column]
        columns.append(column)
    return columns


def cell(value: Any, column: ColumnType) -> Any:
    """A value as the column's type needs it (text columns take the text of anything)."""
    if value is None:
        return None
    if column is ColumnType.TEXT and not isinstance(value, str):
        return orjson.dumps(value).decode() if isinstance(value, bool) else str(value)
    if column is ColumnType.FLOAT and isinstance(value, int):
        return float(value)
    return value
