"""The Postgres connector: COPY into a temporary table, then one version-guarded upsert.

    INSERT INTO "schema"."table" (…) SELECT DISTINCT ON (key) … FROM batch
        ORDER BY key, version DESC
    ON CONFLICT (key) DO UPDATE SET … = EXCLUDED.…
        WHERE "table".version < EXCLUDED.version

so an older version never overwrites a newer one, in whatever order they arrive. An
erasure marker (``status: erased``, the highest version there is) wins that upsert and the
row is then deleted, in the same transaction; an erase record (every row of an anonymous
id or identity) is one ``DELETE``. Every identifier goes through
``psycopg.sql.Identifier``; every value is sent as data by COPY.

Its settings are ``PostgresSettings`` and its registry entry ``WAREHOUSE``, both in
``connectors.postgres``, which imports this module only to start a connector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
import psycopg
from psycopg import sql

from connectors.base import (
    Rejected,
    identities_layout,
    layout_of,
    persons_layout,
    write_or_split,
)
from connectors.errors import WarehouseUnavailable, describe
from connectors.merges import named, plan
from connectors.postgres import NAME, PostgresSettings
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

__all__ = ["PostgresWarehouse"]

log = logging.getLogger(__name__)

SQL_TYPES = {
    ColumnType.BOOL: "boolean",
    ColumnType.INT: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.TEXT: "text",
    ColumnType.TIMESTAMP: "timestamp with time zone",
    ColumnType.JSON: "jsonb",
}
FROM_SQL = {name: kind for kind, name in SQL_TYPES.items()}
#: errors that one record causes and that retrying will not cure: bisect and dead-letter it
PERMANENT = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded)
#: what the server says, at connection, of a setting that waiting will not cure (a missing
#: database or role, a wrong password, a host it does not let in): a ConfigError, not an
#: outage (libpq's connection errors carry no SQLSTATE, only the server's words)
_MISCONFIGURED = (
    "does not exist",
    "password authentication failed",
    "no pg_hba.conf entry",
    "permission denied",
)


class PostgresWarehouse:
    """The sink topic into a PostgreSQL table keyed on ``primary_key_fields``, upserted
    with a version guard: an older version never overwrites a newer one."""

    name = NAME

    def __init__(self, settings: Settings, layout: Layout | None = None) -> None:
        self._settings = settings
        persons = settings.persons.enabled
        self.layout = layout_of(settings, persons=persons) if layout is None else layout
        section = settings.section(PostgresSettings)
        try:
            info = psycopg.conninfo.conninfo_to_dict(section.dsn)
        except psycopg.ProgrammingError as exc:  # its message quotes no part of the DSN
            raise ConfigError(
                f"warehouse.postgres_dsn (RETROSTITCH_POSTGRES_DSN) is not a connection string"
                f" ({str(exc).strip()}): postgresql://user[:password]@host[:port]/database"
            ) from None
        self._dsn = section.dsn
        server = (
            f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )
        self.where = f"postgres {server}, table {section.schema}.{self.layout.table}"
        self.table = sql.Identifier(section.schema, self.layout.table)
        #: with persons: the persons table, and the merges applied (from -> into, each
        #: ``into`` a person not merged away), beside the events table
        events = settings.warehouse.table
        self._persons = sql.Identifier(section.schema, persons_layout(settings).table)
        self._merges = sql.Identifier(section.schema, f"{events}_person_merges")
        #: the tables whose rows name their person: the events and the user mapping table
        self._labelled = (
            sql.Identifier(section.schema, events),
            sql.Identifier(section.schema, identities_layout(settings).table),
        )
        #: the advisory lock that orders a batch's persons against the merges: rows take
        #: it shared, merges and re-labelling exclusive (``resolve_persons``)
        self._lock = f"retrostitch persons {section.schema}.{events}"
        self._schema_name = section.schema
        self._table_name = self.layout.table
        self._conn: psycopg.Connection[Any] | None = None
        self.schema: Schema | None = None

    def open(self) -> None:
        try:
            self._connect()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def beside(self, layout: Layout) -> PostgresWarehouse:
        """Another table of the same schema, on a connection of its own."""
        return PostgresWarehouse(self._settings, layout)

    def write(self, rows: Sequence[Row]) -> list[Rejected]:
        """Upsert the rows (adding or widening columns first), version-guarded; rows
        Postgres refuses come back rejected, the rest land. Raises WarehouseUnavailable."""
        try:
            conn = self._connect()
            self._evolve(conn, rows)
            return self._insert(conn, rows)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def erase(self, erasures: Sequence[Erasure]) -> None:
        """One DELETE per kind of erasure, all in one transaction."""
        try:
            conn = self._connect()
            with conn.transaction():
                for columns, values in grouped_erasures(self.layout, erasures).items():
                    matches = sql.SQL(" OR ").join(
                        sql.SQL("{} = ANY(%(values)s)").format(sql.Identifier(c)) for c in columns
                    )
                    conn.execute(
                        sql.SQL("DELETE FROM {} WHERE {}").format(self.table, matches),
                        {"values": values},
                    )
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def resolve_persons(self, identifiers: Sequence[str], merges: Sequence[PersonMerge]) -> None:
        """Apply the merges in order, then give the rows of each identifier its persons
        row's person; one transaction, holding the persons lock exclusively, so that no
        batch of rows is half-resolved meanwhile (connectors.base.ResolvesPersons)."""
        try:
            conn = self._connect()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock,))
                if merges:
                    self._apply(conn, merges)
                if identifiers:
                    self._relabel(conn, list(identifiers))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise WarehouseUnavailable(describe(exc)) from exc

    def _apply(self, conn: psycopg.Connection[Any], merges: Sequence[PersonMerge]) -> None:
        """The batch's merges in order (``connectors.merges``): one read of what the merges
        table holds for them, then one statement per table: the merge rows, and every row
        of a person merged away moved to where it went."""
        known = conn.execute(
            sql.SQL('SELECT "from", "into" FROM {} WHERE "from" = ANY(%s)').format(self._merges),
            (sorted(named(merges)),),
        ).fetchall()
        done = plan(merges, {str(a): str(b) for a, b in known})
        if not done.rows:
            return
        people = list(done.rows)
        conn.execute(
            sql.SQL(
                'INSERT INTO {} ("from", "into", version)'
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])"
                ' ON CONFLICT ("from") DO UPDATE SET "into" = EXCLUDED."into"'
            ).format(self._merges),
            (people, [done.rows[p][0] for p in people], [done.rows[p][1] for p in people]),
        )
        moved = (list(done.moved), list(done.moved.values()))
        pointing = [(self._merges, "into")]
        pointing += [(table, "person_id") for table in (self._persons, *self._labelled)]
        for table, column in pointing:
            conn.execute(
                sql.SQL(
                    "UPDATE {table} t SET {column} = v.final"
                    " FROM unnest(%s::text[], %s::text[]) AS v(loser, final)"
                    " WHERE t.{column} = v.loser"
                ).format(table=table, column=sql.Identifier(column)),
                moved,
            )

    def _relabel(self, conn: psycopg.Connection[Any], identifiers: list[str]) -> None:
        """The persons rows of ``identifiers`` through the merges, then their rows."""
        conn.execute(
            sql.SQL(
                'UPDATE {persons} p SET person_id = m."into" FROM {merges} m'
                ' WHERE m."from" = p.person_id AND p.identifier_id = ANY(%s)'
            ).format(persons=self._persons, merges=self._merges),
            (identifiers,),
        )
        for table in self._labelled:
            conn.execute(
                sql.SQL(
                    "UPDATE {table} e SET person_id = p.person_id FROM {persons} p"
                    " WHERE e.person_key = p.identifier_id AND p.identifier_id = ANY(%s)"
                    " AND e.person_id IS DISTINCT FROM p.person_id"
                ).format(table=table, persons=self._persons),
                (identifiers,),
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._dsn, connect_timeout=5, autocommit=True)
            except psycopg.OperationalError as exc:
                if any(sign in str(exc) for sign in _MISCONFIGURED):
                    raise ConfigError(
                        f"warehouse.postgres_dsn (RETROSTITCH_POSTGRES_DSN): {describe(exc)}"
                    ) from None
                raise
            # DDL behind a long-running reader must not block the stream forever: give up,
            # count it as unavailable, and try the batch again later.
            self._conn.execute("SET lock_timeout = '10s'")
            try:
                self._create(self._conn)
            except psycopg.errors.InsufficientPrivilege as exc:
                self.close()
                raise ConfigError(
                    f"warehouse.postgres_schema {self._schema_name!r}: the connection string's"
                    f" role may not create the tables there: {describe(exc)}"
                ) from None
        return self._conn

    def _create(self, conn: psycopg.Connection[Any]) -> None:
        fixed = self.layout.fixed
        key = self.layout.key
        columns = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(name),
                sql.SQL(SQL_TYPES[kind]),
                sql.SQL(" NOT NULL" if name in key or name == "version" else ""),
            )
            for name, kind in self.layout.created.items()
        ]
        with conn.transaction():
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema_name))
            )
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                    self.table,
                    sql.SQL(", ").join(columns),
                    sql.SQL(", ").join(map(sql.Identifier, key)),
                )
            )
        if self.layout.person_columns:
            self._create_persons(conn)
        found = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s",
            (self._schema_name, self._table_name),
        ).fetchall()
        self.schema = Schema(
            {name: FROM_SQL.get(kind, ColumnType.TEXT) for name, kind in found},
            frozenset(fixed),
        )

    def _create_persons(self, conn: psycopg.Connection[Any]) -> None:
        """The persons table and the merges beside the events table (and the user mapping
        table, whose rows the merges re-label too), and the indexes the re-labelling reads."""
        PostgresWarehouse(self._settings, persons_layout(self._settings))._create(conn)
        if not self.layout.identities:
            mappings = identities_layout(self._settings, persons=True)
            PostgresWarehouse(self._settings, mappings)._create(conn)
        with conn.transaction():
            conn.execute(  # a table made before persons were on gains their columns
                sql.SQL(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS person_key text,"
                    " ADD COLUMN IF NOT EXISTS person_id text"
                ).format(self.table)
            )
            conn.execute(
                sql.SQL(
                    'CREATE TABLE IF NOT EXISTS {} ("from" text PRIMARY KEY, "into" text NOT NULL,'
                    " version bigint NOT NULL)"
                ).format(self._merges)
            )
            persons = persons_layout(self._settings).table
            merges = f"{self._settings.warehouse.table}_person_merges"
            for table, column in (
                (self._table_name, "person_key"),
                (self._table_name, "person_id"),
                (persons, "person_id"),
                (merges, "into"),
            ):
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                        sql.Identifier(f"{table}_{column}_idx"[:63]),
                        sql.Identifier(self._schema_name, table),
                        sql.Identifier(column),
                    )
                )

    def _evolve(self, conn: psycopg.Connection[Any], rows: Sequence[Row]) -> None:
        assert self.schema is not None
        new, widen = self.schema.plan(rows)
        if not new and not widen:
            return
        with conn.transaction():
            for name, kind in new.items():
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        self.table, sql.Identifier(name), sql.SQL(SQL_TYPES[kind])
                    )
                )
            for name in widen:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE text USING {}::text").format(
                        self.table, sql.Identifier(name), sql.Identifier(name)
                    )
                )
        self.schema.applied(new, widen)

    def _insert(self, conn: psycopg.Connection[Any], rows: Sequence[Row]) -> list[Rejected]:
        def upsert(part: Sequence[Row]) -> None:
            with conn.transaction():
                self._upsert(conn, part)

        return write_or_split(rows, upsert, PERMANENT, self.name)

    def _upsert(self, conn: psycopg.Connection[Any], rows: Sequence[Row]) -> None:
        assert self.schema is not None
        if self.layout.person_columns:  # merges wait for this batch (resolve_persons)
            conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (self._lock,))
        types = self.schema.columns
        names = [name for name in types if any(name in row.values for row in rows)]
        columns = sql.SQL(", ").join(map(sql.Identifier, names))
        key = sql.SQL(", ").join(map(sql.Identifier, self.layout.key))
        batch = sql.Identifier("retrostitch_batch")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(batch))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(batch, self.table)
        )
        rows = [_without_nul(row) for row in rows]
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(batch, columns)) as copy:
            for values in zip(*table_columns(rows, names, types), strict=True):
                copy.write_row(values)
        updates = sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
            for n in names
            if n not in self.layout.key
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {table} AS target ({columns})"
                " SELECT DISTINCT ON ({key}) {columns} FROM {batch} ORDER BY {key}, version DESC"
                " ON CONFLICT ({key}) DO UPDATE SET {updates}"
                " WHERE target.version < EXCLUDED.version"
            ).format(table=self.table, columns=columns, key=key, batch=batch, updates=updates)
        )
        if self.layout.person_columns:
            self._resolve_batch(conn, batch, key)
        if any(row.values.get("status") == Status.ERASED for row in rows):
            # an erasure marker won the upsert (its version is above any other): the row goes
            conn.execute(
                sql.SQL(
                    "DELETE FROM {table} WHERE status = %s AND ({key}) IN"
                    " (SELECT {key} FROM {batch} WHERE status = %s)"
                ).format(table=self.table, key=key, batch=batch),
                (Status.ERASED.value, Status.ERASED.value),
            )

    def _resolve_batch(
        self, conn: psycopg.Connection[Any], batch: sql.Identifier, key: sql.Composable
    ) -> None:
        """The batch's rows' persons: their persons row's, else where a merge took their
        identifier's own person, else that person (``person_key``)."""
        matches = sql.SQL(" AND ").join(
            sql.SQL("e.{0} = b.{0}").format(sql.Identifier(name)) for name in self.layout.key
        )
        conn.execute(
            sql.SQL(
                'UPDATE {table} e SET person_id = COALESCE(p.person_id, m."into", e.person_key)'
                " FROM {batch} b LEFT JOIN {persons} p ON p.identifier_id = b.person_key"
                ' LEFT JOIN {merges} m ON m."from" = b.person_key'
                " WHERE {matches}"
                ' AND e.person_id IS DISTINCT FROM COALESCE(p.person_id, m."into", e.person_key)'
            ).format(
                table=self.table,
                batch=batch,
                persons=self._persons,
                merges=self._merges,
                matches=matches,
            )
        )


def _without_nul(row: Row) -> Row:
    """The row as Postgres can hold it: text and jsonb cannot hold U+0000, which becomes
    U+FFFD in every cell and in the payload (the sink topic keeps the record as it was).
    A row without one (no ``\\u0000`` in its sink record) is returned as it is."""
    if b"\\u0000" not in row.raw:
        return row
    values = {name: _clean(value) for name, value in row.values.items()}
    if "payload" in values:  # a mapping row has none
        values["payload"] = orjson.dumps(_clean(orjson.loads(values["payload"]))).decode()
    return replace(row, values=values, key=tuple(_clean(part) for part in row.key))


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value
