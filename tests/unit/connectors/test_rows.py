"""Sink records as warehouse rows: flattening, names, types and schema evolution (pure)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from connectors.base import write_or_split
from connectors.errors import BadSinkRecord
from connectors.rows import (
    ColumnType,
    Erasure,
    Layout,
    Row,
    Schema,
    _ColumnNames,
    cell,
    column_name,
    grouped_erasures,
    read_sink_record,
    to_row,
)
from streams.core.pointer import Pointer

LAYOUT = Layout(
    identification=(Pointer.parse("/user/id"), Pointer.parse("/user/email")),
    event_time=Pointer.parse("/_timestamp"),
)


def _raw(event: dict[str, Any], version: int = 1, event_id: str = "e1") -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "anonymous_id": "1", "stitched_user_id": "a@b.com",
         "version": version, "status": "amended", "event": event}
    )  # fmt: skip


def test_a_sink_record_becomes_fixed_and_flattened_columns() -> None:
    event = {
        "user": {"anonymous_id": "1", "email": "a@b.com"},
        "page": {"url": "/", "meta": {"depth": 2}},
        "tags": ["a", "b"],
        "empty": None,
        "_timestamp": "2024-05-01T10:00:00Z",
    }
    row = to_row(_raw(event, version=2), "t[0]@5", LAYOUT)
    assert row.values == {
        "event_id": "e1", "anonymous_id": "1", "user_id": None, "user_email": "a@b.com",
        "stitched_user_id": "a@b.com", "event_time": datetime(2024, 5, 1, 10, tzinfo=UTC),
        "version": 2, "status": "amended", "payload": orjson.dumps(event).decode(),
        "user_anonymous_id": "1", "page_url": "/", "page_meta_depth": 2, "tags": '["a","b"]',
        "_timestamp": "2024-05-01T10:00:00Z",
    }  # fmt: skip
    assert (row.key, row.version, row.source) == (("e1",), 2, "t[0]@5")


def test_a_field_named_like_a_fixed_column_does_not_shadow_it() -> None:
    row = to_row(_raw({"version": "evil", "status": 7, "user": {}}), "s", LAYOUT)
    assert (row.values["version"], row.values["status"]) == (1, "amended")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01 10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        (1714557600, datetime(2024, 5, 1, 10, tzinfo=UTC)),
        (1714557600000, datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("yesterday", None),
        (True, None),
        (None, None),
    ],
)
def test_event_time(value: Any, expected: datetime | None) -> None:
    assert to_row(_raw({"_timestamp": value}), "s", LAYOUT).values["event_time"] == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"nope", "sink record is not JSON"),
        (b"[]", "not an object with an 'event' object"),
        (b'{"event": 1}', "not an object with an 'event' object"),
        (
            b'{"event": {}, "version": 0, "event_id": "e"}',
            "version must be an integer from 1 to 2^63-1",
        ),
        (
            b'{"event": {}, "version": "2", "event_id": "e"}',
            "version must be an integer from 1 to 2^63-1",
        ),
        (b'{"event": {}, "version": 1}', "no value for key column(s) event_id"),
    ],
)
def test_records_that_cannot_be_rows_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(BadSinkRecord, match=re.escape(reason)):
        to_row(raw, "s", LAYOUT)


def test_a_configured_key_comes_from_the_flattened_event() -> None:
    layout = Layout(LAYOUT.identification, LAYOUT.event_time, key=("eventn_ctx_event_id",))
    row = to_row(_raw({"eventn_ctx_event_id": "x-1"}), "s", layout)
    assert row.key == ("x-1",)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (("page", "url"), "page_url"),
        (("Page", "URL"), "page_url"),
        (('x"; DROP TABLE events; --',), "x___drop_table_events____"),
        (("ü",), "_"),
    ],
)
def test_column_names_are_flattened_the_jitsu_way(path: tuple[str, ...], name: str) -> None:
    assert column_name(path) == name


def test_long_column_names_stay_unique_within_the_limit() -> None:
    a, b = column_name(("x" * 80, "a")), column_name(("x" * 80, "b"))
    assert len(a) == len(b) == 63
    assert a != b


def _rows(*events: dict[str, Any]) -> list[Any]:
    return [to_row(_raw(e, event_id=f"e{i}"), "s", LAYOUT) for i, e in enumerate(events)]


def test_new_fields_are_planned_as_typed_columns() -> None:
    schema = Schema(dict(LAYOUT.fixed), frozenset(LAYOUT.fixed))
    new, widen = schema.plan(_rows({"n": 1, "f": 1.5, "b": True, "s": "x"}))
    assert new == {
        "n": ColumnType.INT,
        "f": ColumnType.FLOAT,
        "b": ColumnType.BOOL,
        "s": ColumnType.TEXT,
    }
    assert widen == []
    schema.applied(new, widen)
    assert schema.plan(_rows({"n": 2, "f": 3})) == ({}, [])  # an int fits a float column


def test_an_integer_beyond_64_bits_is_text_and_new_columns_keep_the_batch_order() -> None:
    schema = Schema(dict(LAYOUT.fixed), frozenset(LAYOUT.fixed))
    rows = _rows({"z": 1, "big": 2**63 - 1}, {"a": 1, "big": 2**63}, {"z": 2, "a": -(2**63)})
    assert [row.values["big"] for row in rows[:2]] == [2**63 - 1, str(2**63)]
    assert rows[2].values["a"] == -(2**63)
    new, widen = schema.plan(rows)
    assert list(new.items()) == [
        ("z", ColumnType.INT), ("big", ColumnType.TEXT), ("a", ColumnType.INT)
    ]  # fmt: skip
    assert widen == []


def test_a_type_conflict_widens_the_column_to_text_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = Schema({**LAYOUT.fixed, "n": ColumnType.INT}, frozenset(LAYOUT.fixed))
    assert schema.plan(_rows({"n": "seven"}, {"n": 1.5})) == ({}, ["n"])
    assert schema.plan(_rows({"n": "eight"})) == ({}, ["n"])
    assert len([r for r in caplog.records if "'n'" in r.getMessage()]) == 1
    new, _ = schema.plan(_rows({"m": 1}, {"m": "x"}))
    assert new == {"m": ColumnType.TEXT}  # a conflict inside one batch


def test_cells_take_the_shape_of_their_column() -> None:
    assert cell(7, ColumnType.TEXT) == "7"
    assert cell(True, ColumnType.TEXT) == "true"
    assert cell(2, ColumnType.FLOAT) == 2.0
    assert cell(None, ColumnType.INT) is None


def test_a_refused_record_is_isolated_by_splitting_and_the_rest_is_written() -> None:
    rows = _rows(*({"n": i} for i in range(10)))
    written: list[str] = []

    def write(part: Any) -> None:
        if any(row.key == ("e3",) or row.key == ("e7",) for row in part):
            raise ValueError("refused: bad value")
        written.extend(row.key[0] for row in part)

    rejected = write_or_split(rows, write, (ValueError,), "warehouse")

    assert [r.reason for r in rejected] == [
        "warehouse refused the row: ValueError: refused: bad value"
    ] * 2
    assert [r.key for r in rejected] == [b"e3", b"e7"]
    assert sorted(written) == sorted(f"e{i}" for i in range(10) if i not in (3, 7))


def test_clickhouse_errors_that_blame_a_row_are_told_from_the_others() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError

    from connectors.clickhouse.warehouse import blames_a_row

    parse = DatabaseError("DB::Exception: Cannot parse input: expected '\"'", code=27)
    missing = DatabaseError("DB::Exception: Table default.events does not exist", code=60)
    assert blames_a_row(parse)
    assert not blames_a_row(missing)
    assert not blames_a_row(DatabaseError("connection reset"))


def test_an_erase_record_is_an_erasure_of_the_columns_that_hold_its_value() -> None:
    by_id = read_sink_record(b'{"status": "erase", "anonymous_id": "X"}', "s[0]@1", LAYOUT)
    by_identity = read_sink_record(b'{"status": "erase", "identity": "p@x"}', "s", LAYOUT)
    assert by_id == Erasure("anonymous_id", "X", "s[0]@1")
    assert isinstance(by_identity, Erasure)
    assert LAYOUT.erased_by(by_id) == ("anonymous_id",)
    assert LAYOUT.erased_by(by_identity) == ("stitched_user_id", "user_id", "user_email")
    assert grouped_erasures(LAYOUT, [by_id, by_id, by_identity]) == {
        ("anonymous_id",): ["X"],
        ("stitched_user_id", "user_id", "user_email"): ["p@x"],
    }
    for bad in (b'{"status": "erase"}', b'{"status": "erase", "anonymous_id": 7}'):
        with pytest.raises(BadSinkRecord, match="names one anonymous_id or identity"):
            read_sink_record(bad, "s", LAYOUT)
    with pytest.raises(BadSinkRecord, match="an erasure or an identity record, not a row"):
        to_row(b'{"status": "erase", "anonymous_id": "X"}', "s", LAYOUT)


IDENTITIES = Layout(
    identification=LAYOUT.identification,
    event_time=LAYOUT.event_time,
    key=("anonymous_id",),
    table="events_identities",
    identities=True,
)


def _identity(**changes: Any) -> bytes:
    record = {
        "status": "identity", "anonymous_id": "1", "stitched_user_id": "a@b.com",
        "version": 1_714_557_600_000, "mapping": "identified",
        "identification": {"user": {"email": "a@b.com"}},
        "first_seen": 1_714_557_000_000, "first_identified": 1_714_557_600_000,
        "last_identified": 1_714_557_600_000,
    }  # fmt: skip
    return orjson.dumps(record | changes)


def test_an_identity_record_is_a_row_of_the_mapping_table() -> None:
    row = read_sink_record(_identity(), "s", LAYOUT, IDENTITIES)
    assert isinstance(row, Row)
    assert row.identities
    assert row.key == ("1",)
    assert row.version == 1_714_557_600_000
    assert row.values == {
        "anonymous_id": "1", "user_id": None, "user_email": "a@b.com",
        "stitched_user_id": "a@b.com",
        "first_seen": datetime(2024, 5, 1, 9, 50, tzinfo=UTC),
        "first_identified": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        "last_identified": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        "version": 1_714_557_600_000, "status": "identified",
    }  # fmt: skip
    assert list(row.values) == list(IDENTITIES.created)
    # a connector without the mapping table passes it by
    assert read_sink_record(_identity(), "s", LAYOUT) is None
    unknown = read_sink_record(
        _identity(first_identified=None, first_seen=0), "s", LAYOUT, IDENTITIES
    )
    assert isinstance(unknown, Row)
    assert unknown.values["first_seen"] is None


def test_with_persons_a_mapping_row_takes_its_person_key_as_its_person_until_resolved() -> None:
    layout = replace(IDENTITIES, person_columns=True)
    row = read_sink_record(_identity(person_key="p-1"), "s", LAYOUT, layout)
    assert isinstance(row, Row)
    assert (row.values["person_key"], row.values["person_id"]) == ("p-1", "p-1")
    assert list(row.values) == list(layout.created)


def test_a_malformed_identity_record_says_what_is_wrong() -> None:
    for changes, reason in [
        ({"anonymous_id": None}, "names its anonymous_id"),
        ({"mapping": "merged"}, "mapping is one of anonymous, erased, identified"),
        ({"identification": ["a@b.com"]}, "identification is an object"),
        ({"version": 0}, "version must be an integer"),
    ]:
        with pytest.raises(BadSinkRecord, match=reason):
            read_sink_record(_identity(**changes), "s", LAYOUT, IDENTITIES)


def test_column_names_are_kept_up_to_the_bound_then_computed_each_time() -> None:
    names = _ColumnNames(2)
    page = names.under(("page",))
    assert [names.name(page, ("page",), f) for f in ("url", "Title", "x")] == [
        "page_url", "page_title", "page_x"
    ]  # fmt: skip
    assert page == {"url": "page_url", "Title": "page_title"}  # the third is not kept
    assert names.under(("other",)) == {}
    assert names.under(("other",)) is not names.under(("other",))  # no room for a new path
