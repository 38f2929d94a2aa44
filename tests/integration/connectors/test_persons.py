"""Persons in the warehouses: every row shows its person, whatever order the person
records, the merges and the events reach the connector in, and at any age."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pymysql
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import Producer

from connectors.base import Warehouse, identities_layout, persons_layout
from connectors.clickhouse.warehouse import ClickHouseWarehouse
from connectors.mysql import MySQLSettings
from connectors.mysql.warehouse import MySQLWarehouse, connection_options, quoted
from connectors.postgres.warehouse import PostgresWarehouse
from streams.core.control import Command, Verb
from streams.core.persons import PersonLimits, identifier_id, person_id, successor_id
from streams.core.record import (
    SinkRecord,
    Status,
    erase_rows,
    person_merge_record,
    person_record,
    sink_record,
)
from streams.ops.topics import send_command
from streams.settings import Settings
from tests.integration.harness import Pipeline, eventually, running_sink, table_rows

T = 1_714_557_600_000
U7, KIM = (0, "u-7"), (1, "kim@example.com")
DEVICE_A, DEVICE_B = identifier_id("device-a"), identifier_id("device-b")


def _event(event_id: str, anonymous_id: str, person_key: str, version: int = 1) -> SinkRecord:
    return sink_record(
        event_id, anonymous_id, anonymous_id, version, Status.ANONYMOUS, {}, person_key
    )


def _line(event_id: str, anonymous_id: str, **user: str) -> bytes:
    return orjson.dumps(
        {"eventn_ctx_event_id": event_id, "user": {"anonymous_id": anonymous_id, **user}}
    )


def _person(identifier: str, kind: str, value: str, person: str) -> SinkRecord:
    return person_record(identifier, kind, value, person, T, T)


def _send(settings: Settings, records: list[SinkRecord]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for record in records:
        producer.produce(settings.topics.sink, key=record.key, value=record.value)
    assert producer.flush(10) == 0


#: device A's rows (its own person), device B's (Kim's email), then what links them:
#: A identified as u-7, B's person (rooted at Kim's email) merged into u-7's
EVENTS = [_event("a1", "device-a", DEVICE_A), _event("b1", "device-b", identifier_id(KIM))]
PERSONS = [
    _person(identifier_id(U7), "/user/id", "u-7", person_id(U7)),
    _person(identifier_id(KIM), "/user/email", "kim@example.com", person_id(KIM)),
    _person(DEVICE_A, "anonymous_id", "device-a", person_id(U7)),
    _person(DEVICE_B, "anonymous_id", "device-b", person_id(KIM)),
]
MERGE = [person_merge_record(person_id(KIM), person_id(U7), T)]


Reader = Callable[[str, str], list[tuple[Any, ...]]]


def _postgres(settings: Settings) -> tuple[Warehouse, Reader]:
    def read(columns: str, table: str) -> list[tuple[Any, ...]]:
        return table_rows(settings, columns, table)

    return PostgresWarehouse(settings), read


def _mysql(settings: Settings) -> tuple[Warehouse, Reader]:
    def read(columns: str, table: str) -> list[tuple[Any, ...]]:
        options = connection_options(settings.section(MySQLSettings).dsn)
        with pymysql.connect(**options) as conn, conn.cursor() as cursor:
            try:
                cursor.execute(f"SELECT {columns} FROM {quoted(table)} ORDER BY 1")
            except pymysql.err.ProgrammingError:
                return []
            return [tuple(row) for row in cursor.fetchall()]

    return MySQLWarehouse(settings), read


def _clickhouse(settings: Settings) -> tuple[Warehouse, Reader]:
    warehouse = ClickHouseWarehouse(settings)

    def read(columns: str, table: str) -> list[tuple[Any, ...]]:
        view = f"`default`.`{table}_latest`"
        try:
            return [tuple(r) for r in warehouse.query(f"SELECT {columns} FROM {view} ORDER BY 1")]
        except DatabaseError as exc:  # before the connector made the table
            if "UNKNOWN_TABLE" in str(exc):
                return []
            raise

    return warehouse, read


WAREHOUSES = {"postgres": _postgres, "mysql": _mysql, "clickhouse": _clickhouse}


@pytest.mark.parametrize("kind", sorted(WAREHOUSES))
@pytest.mark.parametrize(
    "order",
    [
        pytest.param([EVENTS, PERSONS, MERGE], id="events-persons-merge"),
        pytest.param([MERGE, PERSONS, EVENTS], id="merge-persons-events"),
        pytest.param([PERSONS, MERGE, EVENTS], id="persons-merge-events"),
        pytest.param([MERGE, EVENTS, PERSONS], id="merge-events-persons"),
    ],
)
def test_every_row_shows_the_surviving_person_in_any_order(
    kind: str, order: list[list[SinkRecord]], request: pytest.FixtureRequest
) -> None:
    fixture = "mysql_settings" if kind == "mysql" else "warehouse_settings"
    settings = replace(request.getfixturevalue(fixture), persons=PersonLimits(enabled=True))
    warehouse, read = WAREHOUSES[kind](settings)
    events, persons_table = settings.warehouse.table, persons_layout(settings).table
    kim = person_id(U7)
    with running_sink(settings, warehouse, "persons") as sink:
        for records in order:  # one flush each, in this order
            _send(settings, records)
            flushed = sink.counts.records_read + len(records)
            eventually(lambda f=flushed: sink.counts.records_read >= f, 30, "read")
        eventually(
            lambda: read("event_id, person_id", events) == [("a1", kim), ("b1", kim)],
            30,
            "every event row shows the surviving person",
        )
        persons = read("value, person_id", persons_table)
        assert sorted(persons) == sorted(
            [("u-7", kim), ("kim@example.com", kim), ("device-a", kim), ("device-b", kim)]
        )
        assert sink.counts.dead_lettered == 0


@pytest.mark.parametrize("kind", sorted(WAREHOUSES))
def test_one_person_on_three_devices_through_the_worker_then_unmerge_and_erase(
    kind: str, pipeline: Pipeline, request: pytest.FixtureRequest
) -> None:
    """Device A identifies with a user id, B with an email, then C with both: every row of
    the three devices, the earlier ones too, and each device's row of the user mapping
    table, shows one person. Un-merged, A's amended row is a person of its own; u-7 erased,
    its rows go and Kim's email keeps B's rows one person, under an id that is not u-7's."""
    pipeline.env["USER_RECOGNITION_PERSONS"] = "true"
    fixture = "mysql_settings" if kind == "mysql" else "warehouse_settings"
    settings = replace(request.getfixturevalue(fixture), persons=PersonLimits(enabled=True))
    warehouse, read = WAREHOUSES[kind](settings)
    pipeline.worker()
    pipeline.produce(
        _line("a1", "device-a"),
        _line("a2", "device-a", id="u-7"),
        _line("b1", "device-b"),
        _line("b2", "device-b", email="kim@example.com"),
    )
    with running_sink(settings, warehouse, f"persons-e2e-{kind}"):

        def people() -> dict[str, str]:
            return dict(read("event_id, person_id", settings.warehouse.table))

        def devices() -> dict[str, str]:
            return dict(read("anonymous_id, person_id", identities_layout(settings).table))

        eventually(
            lambda: len(set(people().values())) == 2 and len(people()) == 4, 60, "two people"
        )
        pipeline.produce(_line("c1", "device-c", id="u-7", email="kim@example.com"))
        kim = person_id(U7)
        eventually(lambda: set(people().values()) == {kim} and len(people()) == 5, 60, "one person")
        everyone = {"device-a": kim, "device-b": kim, "device-c": kim}
        eventually(lambda: devices() == everyone, 60, "one person in the mapping table")
        send_command(pipeline.settings, Command(Verb.UNMERGE, anonymous_id="device-a"))
        eventually(lambda: people().get("a1") == DEVICE_A, 60, "device A's own person")
        eventually(lambda: devices()["device-a"] == DEVICE_A, 60, "device A's mapping row")
        assert people()["b1"] == people()["c1"] == kim
        send_command(pipeline.settings, Command(Verb.ERASE, identity="u-7"))
        heir = successor_id(kim, KIM)
        eventually(
            lambda: people() == {"a1": DEVICE_A, "b1": heir, "b2": heir},
            60,
            "u-7's rows gone, Kim's email's rows under the heir's id",
        )
        eventually(
            lambda: devices() == {"device-a": DEVICE_A, "device-b": heir}, 60, "mapping rows"
        )
        persons = read("value, person_id", persons_layout(settings).table)
        assert "u-7" not in {value for value, _ in persons}
        assert kim not in {person for _, person in persons}


@pytest.mark.parametrize("kind", sorted(WAREHOUSES))
@pytest.mark.parametrize("reverse", [False, True], ids=["chain-in-order", "chain-reversed"])
def test_a_chain_of_merges_ends_at_its_last_person(
    kind: str, reverse: bool, request: pytest.FixtureRequest
) -> None:
    """c merged into b, b into a: c's rows show a, in either order of the two merges."""
    fixture = "mysql_settings" if kind == "mysql" else "warehouse_settings"
    settings = replace(request.getfixturevalue(fixture), persons=PersonLimits(enabled=True))
    warehouse, read = WAREHOUSES[kind](settings)
    a, b, c = (person_id((0, name)) for name in "abc")
    rows = [_event("c1", "device-c", c), _event("b1", "device-b", b)]
    merges = [person_merge_record(c, b, T), person_merge_record(b, a, T + 1)]
    with running_sink(settings, warehouse, "chain") as sink:
        for records in (rows, *(reversed(merges) if reverse else merges)):
            _send(settings, [records] if isinstance(records, SinkRecord) else records)
            flushed = sink.counts.records_read + 1
            eventually(lambda f=flushed: sink.counts.records_read >= f, 30, "read")
        eventually(
            lambda: read("event_id, person_id", settings.warehouse.table) == [("b1", a), ("c1", a)],
            30,
            "c's rows show a",
        )


@pytest.mark.parametrize("kind", sorted(WAREHOUSES))
def test_an_erasure_deletes_the_identifiers_persons_rows(
    kind: str, request: pytest.FixtureRequest
) -> None:
    fixture = "mysql_settings" if kind == "mysql" else "warehouse_settings"
    settings = replace(request.getfixturevalue(fixture), persons=PersonLimits(enabled=True))
    warehouse, read = WAREHOUSES[kind](settings)
    persons_table = persons_layout(settings).table
    with running_sink(settings, warehouse, "erase") as sink:
        _send(settings, [*EVENTS, *PERSONS])
        eventually(lambda: len(read("value", persons_table)) == 4, 30, "persons rows")
        _send(settings, [erase_rows(identity="kim@example.com"), erase_rows("device-a")])
        eventually(
            lambda: sorted(read("value", persons_table)) == [("device-b",), ("u-7",)],
            30,
            "the erased identifiers' rows gone",
        )
        assert sink.counts.dead_lettered == 0
