"""The MySQL / MariaDB connector: multi-row, version-guarded upserts (PyMySQL).

    INSERT INTO `db`.`table` (…) VALUES (…), (…)
    ON DUPLICATE KEY UPDATE
        col = IF(VALUES(version) > version, VALUES(col), col), …,
        version = IF(VALUES(version) > version, VALUES(version), version)

MySQL assigns ``ON DUPLICATE KEY UPDATE`` left to right, each assignment seeing the ones
before it: ``version`` is therefore assigned last, so that every other column compares
against the version the row had, and an older version never overwrites a newer one in
whatever order versions arrive (within one statement too). An erasure marker (``status:
erased``, the highest version there is) wins that upsert and the row is then deleted; an
erase record is one ``DELETE``. Identifiers are quoted with backticks (a backtick in a
name doubled); every value is a bound parameter. Sessions run in strict mode in UTC, so
a value a column cannot hold is an error (the record is dead-lettered), never a silent
truncation.

PyMySQL is the driver: pure Python, so it installs from PyPI alone where mysqlclient and
the MariaDB connector need the C client's headers to build (README: dependencies).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

from connectors.base import Rejected, layout_of, write_or_split
from connectors.errors import RecordRejected, WarehouseUnavailable, describe
from connectors.rows import ColumnType, Erasure, Row, Schema, grouped_erasures, table_columns
from streams.core.errors import ConfigError
from streams.core.record import Status
from streams.settings import Settings

__all__ = ["MySQLWarehouse", "connection_options", "quoted"]

log = logging.getLogger(__name__)

SQL_TYPES = {
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.INT: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.TEXT: "LONGTEXT",
    ColumnType.TIMESTAMP: "DATETIME(6)",
    ColumnType.JSON: "JSON",
}
FROM_SQL = {
    "tinyint": ColumnType.BOOL,
    "bigint": ColumnType.INT,
    "double": ColumnType.FLOAT,
    "datetime": ColumnType.TIMESTAMP,
    "json": ColumnType.JSON,
}
#: a key column is indexed: at most 768 characters (3,072 bytes of utf8mb4, InnoDB's limit)
KEY_TYPE = "VARCHAR(768)"
#: server errors that one record causes (a value a column cannot hold, a key too long):
#: retrying will not cure them, so the batch is split and the record dead-lettered
ROW_ERRORS = frozenset({1048, 1264, 1265, 1292, 1366, 1367, 1406, 1416, 3140, 4025})
DUPLICATE_COLUMN = 1060


def quoted(*names: str) -> str:
    """Names as one backtick-quoted identifier (``db``.``table``); a backtick is doubled."""
    return ".".join("`" + name.replace("`", "``") + "`" for name in names)


def _blames_a_row(exc: pymysql.MySQLError) -> bool:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return isinstance(exc, pymysql.err.DataError) or code in ROW_ERRORS


def connection_options(dsn: str) -> dict[str, Any]:
    """``mysql://user:password@host:port/database`` as PyMySQL's connect arguments."""
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/")
    if parts.scheme not in ("mysql", "mariadb") or not database:
        raise ConfigError(
            "warehouse.mysql_dsn must be mysql://user[:password]@host[:port]/database"
        )
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "database": unquote(database),
    }


class MySQLWarehouse:
    """The sink topic into a MySQL or MariaDB table keyed on ``primary_key_fields``,
    upserted with a version guard: an older version never overwrites a newer one."""

    name = "mysql"

    def __init__(self, settings: Settings) -> None:
        self.layout = layout_of(settings)
        self._options = connection_options(settings.warehouse.mysql_dsn)
        self._database = self._options["database"]
        self._table_name = settings.warehouse.table
        self.table = quoted(self._database, self._table_name)
        self._conn: pymysql.connections.Connection[Any] | None = None
        self.schema: Schema | None = None

    def write(self, rows: Sequence[Row]) -> list[Rejected]:
        """Upsert the rows (adding or widening columns first), version-guarded; rows the
        server refuses come back rejected, the rest land. Raises WarehouseUnavailable."""
        try:
            conn = self._connect()
            self._evolve(conn, rows)
            return write_or_split(
                rows, lambda part: self._upsert(conn, part), (RecordRejected,), self.name
            )
        except pymysql.MySQLError as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def erase(self, erasures: Sequence[Erasure]) -> None:
        """One DELETE per kind of erasure, all in one transaction."""
        try:
            conn = self._connect()
            with conn.cursor() as cursor:
                for columns, values in grouped_erasures(self.layout, erasures).items():
                    marks = ", ".join(["%s"] * len(values))
                    matches = " OR ".join(f"{quoted(c)} IN ({marks})" for c in columns)
                    cursor.execute(
                        f"DELETE FROM {self.table} WHERE {matches}", values * len(columns)
                    )
            conn.commit()
        except pymysql.MySQLError as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(pymysql.MySQLError):  # closed by the server already
                self._conn.close()
            self._conn = None

    def _connect(self) -> pymysql.connections.Connection[Any]:
        if self._conn is None or not self._conn.open:
            self._conn = pymysql.connect(
                **self._options,
                charset="utf8mb4",
                connect_timeout=5,
                autocommit=False,
                init_command=(
                    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
                    " time_zone = '+00:00', innodb_lock_wait_timeout = 10"
                ),
            )
            self._create(self._conn)
        return self._conn

    def _create(self, conn: pymysql.connections.Connection[Any]) -> None:
        key = self.layout.key
        columns = [
            f"{quoted(name)} {KEY_TYPE if name in key else SQL_TYPES[kind]}"
            + (" NOT NULL" if name in key or name == "version" else "")
            for name, kind in _with_key(self.layout.fixed, key).items()
        ]
        primary = ", ".join(quoted(name) for name in key)
        with conn.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ({', '.join(columns)},"
                f" PRIMARY KEY ({primary})) DEFAULT CHARSET = utf8mb4"
            )
            cursor.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s",
                (self._database, self._table_name),
            )
            found = cursor.fetchall()
        conn.commit()
        self.schema = Schema(
            {str(name): FROM_SQL.get(str(kind).lower(), ColumnType.TEXT) for name, kind in found},
            frozenset(self.layout.fixed),
        )

    def _evolve(self, conn: pymysql.connections.Connection[Any], rows: Sequence[Row]) -> None:
        assert self.schema is not None
        new, widen = self.schema.plan(rows)
        if not new and not widen:
            return
        changes = [f"ADD COLUMN {quoted(n)} {SQL_TYPES[k]}" for n, k in new.items()]
        changes += [f"MODIFY COLUMN {quoted(name)} LONGTEXT" for name in widen]
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {self.table} {', '.join(changes)}")
        except pymysql.MySQLError as exc:
            if not exc.args or exc.args[0] != DUPLICATE_COLUMN:
                raise
            self._create(conn)  # another connector added it first: read the columns again
            self._evolve(conn, rows)
            return
        self.schema.applied(new, widen)

    def _upsert(self, conn: pymysql.connections.Connection[Any], rows: Sequence[Row]) -> None:
        assert self.schema is not None
        types = self.schema.columns
        names = [name for name in types if any(name in row.values for row in rows)]
        others = [name for name in names if name not in self.layout.key and name != "version"]
        guard = "VALUES(`version`) > `version`"
        updates = [f"{quoted(n)} = IF({guard}, VALUES({quoted(n)}), {quoted(n)})" for n in others]
        updates.append(f"`version` = IF({guard}, VALUES(`version`), `version`)")  # last
        marks = "(" + ", ".join(["%s"] * len(names)) + ")"
        statement = (
            f"INSERT INTO {self.table} ({', '.join(map(quoted, names))}) VALUES {{values}}"
            f" ON DUPLICATE KEY UPDATE {', '.join(updates)}"
        )
        parameters = [
            _storable(value) for values in zip(*table_columns(rows, names, types), strict=True)
            for value in values
        ]  # fmt: skip
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement.format(values=", ".join([marks] * len(rows))), parameters)
                erased = [row.key for row in rows if row.values.get("status") == Status.ERASED]
                if erased:  # an erasure marker won the upsert: the row goes
                    match = " AND ".join(f"{quoted(name)} = %s" for name in self.layout.key)
                    for key in erased:
                        cursor.execute(
                            f"DELETE FROM {self.table} WHERE `status` = %s AND {match}",
                            (Status.ERASED.value, *key),
                        )
            conn.commit()
        except pymysql.MySQLError as exc:
            conn.rollback()
            if _blames_a_row(exc):  # split the batch to find the row
                raise RecordRejected(describe(exc)) from exc
            raise


def _storable(value: Any) -> Any:
    """A cell as PyMySQL sends it: an aware time as naive UTC (the session's time zone)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _with_key(fixed: dict[str, ColumnType], key: Sequence[str]) -> dict[str, ColumnType]:
    """The fixed columns, plus any key column that is not one of them (as text)."""
    columns = dict(fixed)
    for name in key:
        columns.setdefault(name, ColumnType.TEXT)
    return columns
