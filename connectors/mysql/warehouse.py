"""The MySQL / MariaDB connector: batches loaded, then one version-guarded upsert (PyMySQL).

    LOAD DATA LOCAL INFILE … INTO TABLE retrostitch_batch          (text columns only)
    INSERT INTO `db`.`table` (…) SELECT … FROM retrostitch_batch   (or VALUES (…), (…))
    ON DUPLICATE KEY UPDATE
        col = IF(VALUES(version) > version, VALUES(col), col), …,
        version = IF(VALUES(version) > version, VALUES(version), version)

MySQL assigns ``ON DUPLICATE KEY UPDATE`` left to right, each assignment seeing the ones
before it: ``version`` is therefore assigned last, so that every other column compares
against the version the row had, and an older version never overwrites a newer one in
whatever order versions arrive (within one statement too). An erasure marker (``status:
erased``, the highest version there is) wins that upsert and the row is then deleted; an
erase record is one ``DELETE``. Identifiers are quoted with backticks (a backtick in a
name doubled); values travel as data (the loaded file, or bound parameters), never in the
text of a statement. Sessions run in strict mode in UTC, so
a value a column cannot hold is an error (the record is dead-lettered), never a silent
truncation: the batch is loaded into a temporary table of text columns (a ``LOCAL`` load
turns errors into warnings, so it must convert nothing) and converted by the ``INSERT``.
A server that refuses ``LOAD DATA LOCAL`` gets one multi-row ``INSERT … VALUES`` instead.

PyMySQL is the driver: pure Python, so it installs from PyPI alone where mysqlclient and
the MariaDB connector need the C client's headers to build (docs/warehouses.md: MySQL and
MariaDB).

Its settings are ``MySQLSettings`` and its registry entry ``WAREHOUSE``, both in
``connectors.mysql``, which imports this module only to start a connector.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

from connectors.base import (
    Rejected,
    identities_layout,
    layout_of,
    persons_layout,
    write_or_split,
)
from connectors.errors import RecordRejected, WarehouseUnavailable, describe
from connectors.mysql import NAME, MySQLSettings
from connectors.mysql.persons import PersonTables
from connectors.rows import (
    ColumnType,
    Erasure,
    Layout,
    PersonMerge,
    Row,
    Schema,
    grouped_erasures,
    table_columns,
)
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
#: server errors at connection that a setting causes (access denied, an unknown database):
#: a ConfigError, not an outage
MISCONFIGURED = frozenset({1044, 1045, 1049, 1698})


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

    name = NAME

    def __init__(
        self, settings: Settings, layout: Layout | None = None, *, local_infile: bool = True
    ) -> None:
        """``local_infile``: load batches with ``LOAD DATA LOCAL`` (faster) until the
        server refuses it; False writes with ``INSERT`` only."""
        self._settings = settings
        persons = settings.persons.enabled
        self.layout = layout_of(settings, persons=persons) if layout is None else layout
        self._options = connection_options(settings.section(MySQLSettings).dsn)
        options = self._options
        self.where = (
            f"mysql {options['host']}:{options['port']}/{options['database']},"
            f" table {self.layout.table}"
        )
        self._database = self._options["database"]
        self._table_name = self.layout.table
        self.table = quoted(self._database, self._table_name)
        #: with persons: the tables beside this one that give each row its person (the
        #: events table's merges re-label the user mapping table's rows too)
        events = settings.warehouse.table
        mappings = identities_layout(settings).table
        self._people = PersonTables(
            self.table,
            quoted(self._database, persons_layout(settings).table),
            quoted(self._database, f"{events}_person_merges"),
            quoted(self._database, f"{events}_persons_lock"),
            self.layout.key,
            () if self.layout.identities else (quoted(self._database, mappings),),
        )
        self._conn: pymysql.connections.Connection[Any] | None = None
        self.schema: Schema | None = None
        self._local_infile = local_infile  # until the server refuses it

    def open(self) -> None:
        try:
            self._connect()
        except pymysql.err.OperationalError as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def beside(self, layout: Layout) -> MySQLWarehouse:
        """Another table of the same database, on a connection of its own."""
        return MySQLWarehouse(self._settings, layout, local_infile=self._local_infile)

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

    def resolve_persons(self, identifiers: Sequence[str], merges: Sequence[PersonMerge]) -> None:
        """Apply the merges in order, then give the rows of each identifier its persons
        row's person; one transaction, holding the persons lock exclusively
        (connectors.base.ResolvesPersons)."""
        try:
            conn = self._connect()
            with conn.cursor() as cursor:
                self._people.lock(cursor, exclusive=True)
                if merges:
                    self._people.merge(cursor, merges)
                if identifiers:
                    self._people.relabel(cursor, list(identifiers))
            conn.commit()
        except pymysql.MySQLError as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def _create_persons(self, conn: pymysql.connections.Connection[Any]) -> None:
        """The persons table, the merges and the lock row beside the events table, the
        events table's person columns and the indexes the re-labelling reads."""
        MySQLWarehouse(self._settings, persons_layout(self._settings))._create(conn)
        if not self.layout.identities:  # the merges re-label its rows: it is there
            mappings = identities_layout(self._settings, persons=True)
            MySQLWarehouse(self._settings, mappings)._create(conn)
        with conn.cursor() as cursor:
            self._people.create(cursor)
        conn.commit()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(pymysql.MySQLError):  # closed by the server already
                self._conn.close()
            self._conn = None

    def _connect(self) -> pymysql.connections.Connection[Any]:
        if self._conn is None or not self._conn.open:
            try:
                self._conn = self._connection()
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] in MISCONFIGURED:
                    raise ConfigError(
                        f"warehouse.mysql_dsn (RETROSTITCH_MYSQL_DSN): {describe(exc)}"
                    ) from None
                raise
            self._create(self._conn)
        return self._conn

    def _connection(self) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            **self._options,
            charset="utf8mb4",
            connect_timeout=5,
            local_infile=True,
            autocommit=False,
            init_command=(
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
                " time_zone = '+00:00', innodb_lock_wait_timeout = 10"
            ),
        )

    def _create(self, conn: pymysql.connections.Connection[Any]) -> None:
        key = self.layout.key
        columns = [
            f"{quoted(name)} {KEY_TYPE if name in key else SQL_TYPES[kind]}"
            + (" NOT NULL" if name in key or name == "version" else "")
            for name, kind in self.layout.created.items()
        ]
        primary = ", ".join(quoted(name) for name in key)
        with conn.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ({', '.join(columns)},"
                f" PRIMARY KEY ({primary})) DEFAULT CHARSET = utf8mb4"
            )
        conn.commit()
        if self.layout.person_columns:
            self._create_persons(conn)
        with conn.cursor() as cursor:
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
        # the target's columns named in full: an INSERT … SELECT has the batch's too
        target = {n: quoted(self._database, self._table_name, n) for n in names}
        guard = f"VALUES(`version`) > {target['version']}"
        updates = [f"{target[n]} = IF({guard}, VALUES({quoted(n)}), {target[n]})" for n in others]
        updates.append(f"{target['version']} = IF({guard}, VALUES(`version`), {target['version']})")
        columns = table_columns(rows, names, types)
        upsert = f" ON DUPLICATE KEY UPDATE {', '.join(updates)}"
        try:
            with conn.cursor() as cursor:
                if self.layout.person_columns:  # merges wait for this batch
                    self._people.lock(cursor, exclusive=False)
                if self._local_infile:
                    self._load(cursor, names, columns, types, upsert)
                else:
                    self._insert(cursor, names, columns, upsert)
                if self.layout.person_columns:
                    self._people.resolve_batch(cursor, rows)
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
            if self._local_infile and exc.args and exc.args[0] in LOCAL_INFILE_REFUSED:
                log.info("the server refuses LOAD DATA LOCAL: writing with INSERT instead")
                self._local_infile = False
                self._upsert(conn, rows)
                return
            raise

    def _load(
        self,
        cursor: Any,
        names: Sequence[str],
        columns: list[list[Any]],
        types: dict[str, ColumnType],
        upsert: str,
    ) -> None:
        """The batch as tab-separated text through ``LOAD DATA LOCAL`` into a temporary
        table of text columns (a load never converts, so it never truncates), then one
        ``INSERT … SELECT`` in strict mode, where a value a column cannot hold is an error."""
        listed = ", ".join(map(quoted, names))
        cursor.execute("DROP TEMPORARY TABLE IF EXISTS `retrostitch_batch`")
        texts = ", ".join(f"{quoted(name)} LONGTEXT" for name in names)
        cursor.execute(f"CREATE TEMPORARY TABLE `retrostitch_batch` ({texts})")
        texts_by_column = [
            _tsv_column(column, types[name]) for name, column in zip(names, columns, strict=True)
        ]
        with tempfile.NamedTemporaryFile("wb", prefix="retrostitch-", dir=_SCRATCH) as batch:
            batch.write(
                "".join(
                    "\t".join(row) + "\n" for row in zip(*texts_by_column, strict=True)
                ).encode()
            )
            batch.flush()
            cursor.execute(
                "LOAD DATA LOCAL INFILE %s INTO TABLE `retrostitch_batch` CHARACTER SET utf8mb4"
                f" FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
                f" ({listed})",
                (batch.name,),
            )
        cursor.execute(
            f"INSERT INTO {self.table} ({listed}) SELECT {listed} FROM `retrostitch_batch`"
            f" ORDER BY `version`{upsert}"
        )

    def _insert(
        self, cursor: Any, names: Sequence[str], columns: list[list[Any]], upsert: str
    ) -> None:
        """The batch as one multi-row ``INSERT`` (servers that refuse ``LOAD DATA LOCAL``)."""
        marks = "(" + ", ".join(["%s"] * len(names)) + ")"
        values = ", ".join([marks] * len(columns[0]))
        parameters = [_storable(value) for row in zip(*columns, strict=True) for value in row]
        cursor.execute(
            f"INSERT INTO {self.table} ({', '.join(map(quoted, names))}) VALUES {values}{upsert}",
            parameters,
        )


#: where batches are written for LOAD DATA LOCAL: memory where there is some
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
#: LOAD DATA LOCAL is off on the server or the client: write with INSERT
LOCAL_INFILE_REFUSED = frozenset({1148, 2068, 3948})
_TSV = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\0"})


def _tsv_column(values: list[Any], kind: ColumnType) -> list[str]:
    """One column as ``LOAD DATA``'s text fields: ``\\N`` for NULL, backslash escapes in
    text, ``1``/``0`` for booleans, times in UTC (the session's time zone)."""
    if kind is ColumnType.TEXT or kind is ColumnType.JSON:  # text already (table_columns)
        return ["\\N" if v is None else str(v).translate(_TSV) for v in values]
    if kind is ColumnType.BOOL:
        return ["\\N" if v is None else "1" if v else "0" for v in values]
    if kind is ColumnType.TIMESTAMP:
        return ["\\N" if v is None else _storable(v).isoformat(" ") for v in values]
    return ["\\N" if v is None else str(v) for v in values]


def _storable(value: Any) -> Any:
    """A cell as PyMySQL sends it: an aware time as naive UTC (the session's time zone)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value
