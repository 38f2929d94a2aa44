"""The user mapping table in every warehouse: the latest version wins whatever the order,
an erasure deletes the row, and a mapping made again after it comes back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import Producer

from connectors.base import Warehouse, identities_layout
from connectors.clickhouse.warehouse import ClickHouseWarehouse
from connectors.mysql import MySQLSettings
from connectors.mysql.warehouse import MySQLWarehouse, connection_options, quoted
from connectors.postgres.warehouse import PostgresWarehouse
from streams.core.record import Status, erase_rows, identity_record
from streams.settings import Settings
from tests.integration.harness import eventually, running_sink, table_rows

COLUMNS = "anonymous_id, status, user_email, stitched_user_id, version"
T = 1_714_557_600_000  # 2024-05-01 10:00 UTC


def _mapping(
    anonymous_id: str, version: int, email: str | None, status: Status = Status.IDENTIFIED
) -> tuple[bytes, bytes]:
    identification = {} if email is None else {"user": {"email": email}}
    record = identity_record(
        anonymous_id, email or anonymous_id, status, identification, version, (T - 1, T, version)
    )
    return record.key, record.value


def _send(settings: Settings, *records: tuple[bytes, bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for key, value in records:
        producer.produce(settings.topics.sink, key=key, value=value)
    assert producer.flush(10) == 0


Reader = Callable[[], list[tuple[Any, ...]]]


def _postgres(settings: Settings) -> tuple[Warehouse, Reader]:
    table = identities_layout(settings).table
    return PostgresWarehouse(settings), lambda: table_rows(settings, COLUMNS, table)


def _clickhouse(settings: Settings) -> tuple[Warehouse, Reader]:
    warehouse = ClickHouseWarehouse(settings)
    view = f"`default`.`{identities_layout(settings).table}_latest`"

    def read() -> list[tuple[Any, ...]]:
        try:
            return [tuple(r) for r in warehouse.query(f"SELECT {COLUMNS} FROM {view} ORDER BY 1")]
        except DatabaseError as exc:  # before the connector made the table
            if "UNKNOWN_TABLE" in str(exc):
                return []
            raise

    return warehouse, read


def _mysql(settings: Settings) -> tuple[Warehouse, Reader]:
    table = quoted(identities_layout(settings).table)

    def read() -> list[tuple[Any, ...]]:
        options = connection_options(settings.section(MySQLSettings).dsn)
        with pymysql.connect(**options) as conn, conn.cursor() as cursor:
            try:
                cursor.execute(f"SELECT {COLUMNS} FROM {table} ORDER BY 1")
            except pymysql.err.ProgrammingError:
                return []
            return [tuple(row) for row in cursor.fetchall()]

    return MySQLWarehouse(settings), read


@pytest.mark.parametrize("kind", ["postgres", "clickhouse", "mysql"])
def test_the_latest_mapping_wins_an_erasure_deletes_and_a_new_mapping_comes_back(
    kind: str, request: pytest.FixtureRequest
) -> None:
    settings: Settings = request.getfixturevalue(
        "mysql_settings" if kind == "mysql" else "warehouse_settings"
    )
    warehouse, rows = {"postgres": _postgres, "clickhouse": _clickhouse, "mysql": _mysql}[kind](
        settings
    )
    _send(
        settings,
        _mapping("A", T + 2, "a@b.com"), _mapping("A", T + 1, "old@b.com"),  # older, later
        _mapping("B", T, "b@b.com"), _mapping("B", T + 5, None, Status.ERASED),
        _mapping("B", T + 6, "c@b.com"),  # identified again after the erasure, same batch
        _mapping("C", T, "c@c.com"), _mapping("C", T + 1, None, Status.ANONYMOUS),
        _mapping("D", T, "d@d.com"), _mapping("D", T + 1, None, Status.ERASED),
    )  # fmt: skip
    expected = [
        ("A", "identified", "a@b.com", "a@b.com", T + 2),
        ("B", "identified", "c@b.com", "c@b.com", T + 6),
        ("C", "anonymous", None, "C", T + 1),
    ]
    with running_sink(settings, warehouse, kind) as sink:
        eventually(lambda: rows() == expected, 60, f"{kind} mapping rows")
        # an erasure in a later batch, then the row made again, one version up
        _send(settings, _mapping("A", T + 9, None, Status.ERASED))
        eventually(lambda: [r[0] for r in rows()] == ["B", "C"], 60, "A erased")
        _send(settings, _mapping("A", T + 10, "new@b.com"))
        eventually(lambda: rows()[0] == ("A", "identified", "new@b.com", "new@b.com", T + 10), 60)
        # an erase record deletes by identity in the mapping table too
        erase = erase_rows(identity="c@b.com")
        _send(settings, (erase.key, erase.value))
        eventually(lambda: [r[0] for r in rows()] == ["A", "C"], 60, "B erased by identity")
        assert sink.counts.identities_written == 11
        assert sink.counts.dead_lettered == 0
