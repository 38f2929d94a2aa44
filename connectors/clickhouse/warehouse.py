"""The ClickHouse connector: ReplacingMergeTree(version), re-inserted on every amendment.

ClickHouse does not update rows: each re-emission is a new row with a higher version, and
ReplacingMergeTree keeps only the highest version of each key when it merges parts, at a
time of its choosing. Until then both rows exist, so readers use the ``<table>_latest``
view (``SELECT … FINAL``), which always shows exactly one, the latest, row per key. An
erasure is one more row, the highest version, with ``is_deleted = 1``
(``ReplacingMergeTree(version, is_deleted)``): the view shows nothing for that key. An
erase record (every row of an anonymous id or identity) is a lightweight ``DELETE``.

One code path for every ClickHouse: clickhouse-connect's ``Client``, given
``RETROSTITCH_CLICKHOUSE_URL``: ``http(s)://user:password@host:port`` for a server, or
``chdb://path`` for the engine in-process (the embedded default and the tests). chdb locks
its directory to one process and has no async client, so the connector owns its client,
serializes every call on one lock, and offers ``query`` to readers in the same process;
the user mapping table's writer (``beside``) shares that client and lock.

Its settings are ``ClickHouseSettings`` and its registry entry ``WAREHOUSE``, both in
``connectors.clickhouse``, which imports this module only to start a connector.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
import orjson
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)

from connectors.base import Rejected, layout_of, persons_layout, write_or_split
from connectors.clickhouse import NAME, ClickHouseSettings
from connectors.errors import RecordRejected, WarehouseUnavailable, describe
from connectors.merges import named, plan
from connectors.rows import (
    ColumnType,
    Erasure,
    Layout,
    PersonMerge,
    Row,
    Schema,
    grouped_erasures,
)
from streams.core.errors import ConfigError
from streams.core.record import Status
from streams.settings import Settings

__all__ = ["ClickHouseWarehouse", "client_dsn"]

CH_TYPES = {
    ColumnType.BOOL: "Bool",
    ColumnType.INT: "Int64",
    ColumnType.FLOAT: "Float64",
    ColumnType.TEXT: "String",
    ColumnType.TIMESTAMP: "DateTime64(3, 'UTC')",
    ColumnType.JSON: "String",
}
FROM_CH = {"Bool": ColumnType.BOOL, "Int64": ColumnType.INT, "Float64": ColumnType.FLOAT}
#: Rows go in as JSONEachRow, parsed by ClickHouse itself: a number or a bool bound for a
#: text column (after a type conflict) is kept as its JSON text, as ``rows.cell`` would.
JSON_INPUT = {
    "date_time_input_format": "best_effort",
    "input_format_json_read_numbers_as_strings": 1,
    "input_format_json_read_bools_as_strings": 1,
    "input_format_skip_unknown_fields": 0,
}


#: ReplacingMergeTree's "is deleted" column: 1 on an erasure marker (the highest version),
#: so that FINAL, and the ``_latest`` view, no longer show the row
DELETED = "is_deleted"
#: the most links of merges followed at one batch (a chain needs one per link)
MAX_CHAIN = 8

#: ClickHouse error codes that blame the data of a row (a value it cannot parse or hold),
#: not the server or the table: the batch is split to find the row, which is dead-lettered
ROW_ERRORS = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131})


def blames_a_row(exc: DatabaseError) -> bool:
    """Whether the server's error code (the driver's ``code``, over HTTP and in chdb
    alike) says the data of a row is at fault."""
    return exc.code in ROW_ERRORS


#: the statements ``answer`` runs: one, reading only (chdb has one session per process, the
#: connector's, so a ``readonly`` setting would stay on it and stop its writes)
READ_ONLY = re.compile(r"(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.IGNORECASE)
INTO_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)

#: server errors that a setting causes (a wrong user or password, a database that does not
#: exist or may not be created): a ConfigError at start, not an outage
MISCONFIGURED = frozenset({81, 192, 193, 194, 497, 516})


def client_dsn(url: str) -> str:
    """``chdb://relative/dir`` made absolute (clickhouse-connect wants ``chdb:///abs``);
    anything but ``http(s)://host…`` and ``chdb://dir`` is a ConfigError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "chdb") or (
        parts.scheme != "chdb" and not parts.hostname
    ):
        raise ConfigError(
            "warehouse.clickhouse_url (RETROSTITCH_CLICKHOUSE_URL) must be"
            " http(s)://[user:password@]host[:port] or chdb://directory"
        )
    if url.startswith("chdb://"):
        path = Path(url.removeprefix("chdb://")).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return f"chdb://{path}"
    return url


class _Session:
    """One clickhouse-connect client and the lock every call holds, shared by the
    connector's tables; ``generation`` counts the clients made (a table is made again
    on each new one: the server may have lost it meanwhile)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Client | None = None
        self.lock = threading.Lock()
        self.generation = 0
        #: why chdb last failed to open its directory, in the engine's words (it prints
        #: them to the process's stderr, not in the exception)
        self.refusal = ""

    def connect(self) -> Client:
        if self.client is None:
            if self.url.startswith("chdb://"):
                self.client = self._open_chdb()
            else:
                self.client = clickhouse_connect.get_client(dsn=client_dsn(self.url))
            self.generation += 1
        return self.client

    def _open_chdb(self) -> Client:
        """The in-process engine, whose own error lines are kept rather than printed: a
        directory another process holds is said once, in ``ConfigError``'s words."""
        with tempfile.TemporaryFile() as said:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(said.fileno(), 2)
            try:
                client = clickhouse_connect.get_client(dsn=client_dsn(self.url))
            except ProgrammingError:
                said.seek(0)
                lines = said.read().decode(errors="replace").splitlines()
                self.refusal = next((line for line in lines if "Exception" in line), "")
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            said.seek(0)
            os.write(2, said.read())  # nothing went wrong: what it said is shown after all
        return client

    def drop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class ClickHouseWarehouse:
    """The sink topic into a ClickHouse ReplacingMergeTree table (``version`` its version
    column), over HTTP or in-process chdb through one clickhouse-connect ``Client``."""

    name = NAME

    def __init__(
        self, settings: Settings, layout: Layout | None = None, *, session: _Session | None = None
    ) -> None:
        self._settings = settings
        persons = settings.persons.enabled
        self.layout = layout_of(settings, persons=persons) if layout is None else layout
        section = settings.section(ClickHouseSettings)
        self._database = section.database
        self._cluster = section.cluster
        table = self.layout.table
        self.table = f"{quote_identifier(self._database)}.{quote_identifier(table)}"
        #: with persons: the persons table and the merges applied (from -> into), which
        #: the ``_latest`` views read to give every row its person at read time
        self._persons = self._named(persons_layout(settings).table)
        self._merges = self._named(f"{settings.warehouse.table}_person_merges")
        self.latest_view = (
            f"{quote_identifier(self._database)}.{quote_identifier(table + '_latest')}"
        )
        self._table_name = table
        client_dsn(section.url)  # checked at once: a wrong URL is a ConfigError
        url = urlsplit(section.url)
        server = (
            section.url if url.scheme == "chdb" else f"{url.scheme}://{url.hostname}:{url.port}"
        )
        self.where = f"clickhouse {server}, table {self._database}.{table}"
        self._session = _Session(section.url) if session is None else session
        self._lock = self._session.lock
        self._made = 0  # the session's generation this table was made in
        self.schema: Schema | None = None

    def open(self) -> None:
        with self._lock:
            try:
                self._connect()
            except ModuleNotFoundError as exc:  # chdb:// without the engine installed
                raise ConfigError(
                    f"warehouse.clickhouse_url is chdb://, the engine in-process, which is not"
                    f" installed ({exc.name}): pip install 'retrostitch[chdb]', or use a"
                    " ClickHouse server (http(s)://…)"
                ) from None
            except OperationalError as exc:
                self._drop_client()
                raise WarehouseUnavailable(describe(exc)) from exc
            except ProgrammingError as exc:  # chdb: the directory is another process's
                raise ConfigError(self._held_elsewhere(exc)) from None
            except DatabaseError as exc:
                if exc.code in MISCONFIGURED:
                    raise ConfigError(
                        f"warehouse.clickhouse_url / warehouse.clickhouse_database: {describe(exc)}"
                    ) from None
                raise

    def beside(self, layout: Layout) -> ClickHouseWarehouse:
        """Another table of the same database, on the same client and lock."""
        return ClickHouseWarehouse(self._settings, layout, session=self._session)

    def write(self, rows: Sequence[Row]) -> list[Rejected]:
        """Insert the rows (adding or widening columns first); a row ClickHouse blames
        (``blames_a_row``) comes back rejected, the rest land. Raises WarehouseUnavailable."""
        with self._lock:
            try:
                client = self._connect()
                self._evolve(client, rows)
                return self._insert(client, rows)
            except OperationalError as exc:
                self._drop_client()
                raise WarehouseUnavailable(describe(exc)) from exc

    def erase(self, erasures: Sequence[Erasure]) -> None:
        """A lightweight DELETE per kind of erasure: the rows are gone from every read at
        once (``_latest`` too) and from disk at the next merges."""
        with self._lock:
            try:
                client = self._connect()
                for columns, values in grouped_erasures(self.layout, erasures).items():
                    matches = " OR ".join(
                        f"{quote_identifier(c)} IN {{values:Array(String)}}" for c in columns
                    )
                    client.command(
                        f"DELETE FROM {self.table}{self._on_cluster()} WHERE {matches}",
                        parameters={"values": values},
                    )
            except OperationalError as exc:
                self._drop_client()
                raise WarehouseUnavailable(describe(exc)) from exc

    def resolve_persons(self, identifiers: Sequence[str], merges: Sequence[PersonMerge]) -> None:
        """Apply the merges in order (connectors.base.ResolvesPersons). ClickHouse gives
        every row its person when it is read (the ``_latest`` views join the persons and
        the merges), so only the merges are written: each ``into`` is where its person went
        last, and a chain two connectors left (a merge of a person that another merged at
        the same time) is followed to its end here, at every batch."""
        with self._lock:
            try:
                client = self._connect()
                if merges:
                    self._apply(client, merges)
                for _ in range(MAX_CHAIN):  # chains: a -> b where b -> c
                    chained = client.query(
                        f"SELECT a.`from`, b.`into`, a.version + 1 FROM {self._merges} AS a FINAL"
                        f" JOIN {self._merges} AS b FINAL ON a.`into` = b.`from`"
                    ).result_rows
                    if not chained:
                        break
                    client.insert(
                        self._merges, [list(r) for r in chained], ["from", "into", "version"]
                    )
            except OperationalError as exc:
                self._drop_client()
                raise WarehouseUnavailable(describe(exc)) from exc

    def _apply(self, client: Client, merges: Sequence[PersonMerge]) -> None:
        """The batch's merges in order (``connectors.merges``): one read of what the merges
        table holds for them, one insert of their rows, one re-pointing of older rows."""
        known = client.query(
            f"SELECT `from`, `into` FROM {self._merges} FINAL WHERE `from` IN {{p:Array(String)}}",
            parameters={"p": sorted(named(merges))},
        ).result_rows
        done = plan(merges, {str(a): str(b) for a, b in known})
        if not done.rows:
            return
        rows = [[person, into, version] for person, (into, version) in done.rows.items()]
        client.insert(self._merges, rows, ["from", "into", "version"])
        losers, finals = list(done.moved), list(done.moved.values())
        client.command(
            f"INSERT INTO {self._merges} (`from`, `into`, version)"
            " SELECT `from`, transform(`into`, {losers:Array(String)}, {finals:Array(String)}),"
            f" version + 1 FROM {self._merges} FINAL WHERE `into` IN {{losers:Array(String)}}",
            parameters={"losers": losers, "finals": finals},
        )

    def query(self, statement: str, parameters: dict[str, Any] | None = None) -> list[Any]:
        """Rows of a SELECT, on the connector's own client (chdb allows only one)."""
        with self._lock:
            return list(self._connect().query(statement, parameters=parameters).result_rows)

    def answer(self, statement: str) -> str:
        """The rows of one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN,
        EXISTS) as tab-separated text with a header line, on the connector's own client:
        how ``retrostitch query`` reads the embedded ClickHouse while a connector holds it.
        Anything else, or a statement ClickHouse refuses, is a ValueError saying why."""
        text = statement.strip().rstrip(";").strip()
        if not READ_ONLY.match(text) or ";" in text or INTO_OUTFILE.search(text):
            raise ValueError(
                "only one read-only statement is answered: SELECT, WITH, SHOW, DESCRIBE,"
                " EXPLAIN or EXISTS"
            )
        with self._lock:
            try:
                data = self._connect().raw_query(text, fmt="TabSeparatedWithNames")
            except ProgrammingError as exc:
                raise ValueError(self._held_elsewhere(exc)) from None
            except DatabaseError as exc:
                raise ValueError(describe(exc)) from None
        return data.decode(errors="replace")

    def _held_elsewhere(self, exc: ProgrammingError) -> str:
        """chdb could not open its directory: one process at a time may."""
        reason = self._session.refusal or describe(exc)
        return (
            f"warehouse.clickhouse_url {self._session.url}: chdb could not open the directory,"
            " which one process at a time may hold (a connector, or a query): stop the other,"
            f" or read through the running connector with retrostitch query ({reason})"
        )

    def close(self) -> None:
        with self._lock:
            self._drop_client()

    def _drop_client(self) -> None:
        self._session.drop()

    def _connect(self) -> Client:
        client = self._session.connect()
        if self._made != self._session.generation:
            self._create(client)
            self._made = self._session.generation
        return client

    def _named(self, table: str) -> str:
        return f"{quote_identifier(self._database)}.{quote_identifier(table)}"

    def _on_cluster(self) -> str:
        return f" ON CLUSTER {quote_identifier(self._cluster)}" if self._cluster else ""

    def _engine(self) -> str:
        if self._cluster:
            return (
                "ReplicatedReplacingMergeTree("
                "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version, "
                f"{DELETED})"
            )
        return f"ReplacingMergeTree(version, {DELETED})"

    def _create(self, client: Client) -> None:
        key = self.layout.key
        columns = self.layout.created
        definitions = ", ".join(
            [f"{quote_identifier(n)} {self._column_type(n, k)}" for n, k in columns.items()]
            + [f"{DELETED} UInt8 DEFAULT 0"]
        )
        order_by = ", ".join(quote_identifier(name) for name in key)
        client.command(
            f"CREATE DATABASE IF NOT EXISTS {quote_identifier(self._database)}{self._on_cluster()}"
        )
        client.command(
            f"CREATE TABLE IF NOT EXISTS {self.table}{self._on_cluster()} ({definitions})"
            f" ENGINE = {self._engine()} ORDER BY ({order_by})"
        )
        # tables made before erasures existed: the column, and the view's filter below
        client.command(
            f"ALTER TABLE {self.table}{self._on_cluster()}"
            f" ADD COLUMN IF NOT EXISTS {DELETED} UInt8 DEFAULT 0"
        )
        if self.layout.person_columns or self.layout.persons_table:
            self._create_persons(client)
        found = client.query(
            "SELECT name, type FROM system.columns"
            " WHERE database = {db:String} AND table = {t:String}",
            parameters={"db": self._database, "t": self._table_name},
        ).result_rows
        self.schema = Schema(
            {name: FROM_CH.get(kind.removeprefix("Nullable(").rstrip(")"), ColumnType.TEXT)
             for name, kind in found if name != DELETED},
            frozenset(self.layout.fixed),
        )  # fmt: skip
        self._create_view(client)

    def _column_type(self, name: str, kind: ColumnType) -> str:
        base = CH_TYPES[kind]
        if name in self.layout.key or name in {"version", "payload"}:
            return "UInt64" if name == "version" else base
        return f"Nullable({base})"

    def _create_persons(self, client: Client) -> None:
        """The merges, and for the events table its person columns and the persons table."""
        merges = "ReplacingMergeTree(version)"
        if self._cluster:
            merges = (
                "ReplicatedReplacingMergeTree("
                "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)"
            )
        client.command(
            f"CREATE TABLE IF NOT EXISTS {self._merges}{self._on_cluster()}"
            f" (`from` String, `into` String, version UInt64) ENGINE = {merges} ORDER BY (`from`)"
        )
        if self.layout.person_columns:
            client.command(
                f"ALTER TABLE {self.table}{self._on_cluster()}"
                " ADD COLUMN IF NOT EXISTS person_key Nullable(String),"
                " ADD COLUMN IF NOT EXISTS person_id Nullable(String)"
            )
            self.beside(persons_layout(self._settings))._create(client)

    def _create_view(self, client: Client) -> None:
        """``<table>_latest``: the latest row of each key; with persons, the person of each
        row as it is now: its identifier's persons row's (where a merge took it since,
        else as is), else where a merge took the identifier's own person, else that one."""
        rows = f"SELECT * FROM {self.table} FINAL WHERE {DELETED} = 0"
        merges = f"SELECT `from`, `into` FROM {self._merges} FINAL"
        if self.layout.person_columns:
            persons = (
                f"SELECT identifier_id, person_id FROM {self._persons} FINAL WHERE {DELETED} = 0"
            )
            select = (
                f"SELECT e.* EXCEPT ({DELETED}, person_id), if(p.identifier_id != '',"
                " if(mp.`from` != '', mp.`into`, p.person_id),"
                " if(mk.`from` != '', mk.`into`, e.person_key)) AS person_id"
                f" FROM ({rows}) AS e"
                f" LEFT JOIN ({persons}) AS p ON p.identifier_id = ifNull(e.person_key, '')"
                f" LEFT JOIN ({merges}) AS mp ON mp.`from` = ifNull(p.person_id, '')"
                f" LEFT JOIN ({merges}) AS mk ON mk.`from` = ifNull(e.person_key, '')"
            )
        elif self.layout.persons_table:
            select = (
                f"SELECT p.* EXCEPT ({DELETED}, person_id),"
                " if(m.`from` != '', m.`into`, p.person_id) AS person_id"
                f" FROM ({rows}) AS p LEFT JOIN ({merges}) AS m"
                " ON m.`from` = ifNull(p.person_id, '')"
            )
        else:
            select = f"SELECT * EXCEPT ({DELETED}) FROM {self.table} FINAL WHERE {DELETED} = 0"
        client.command(f"CREATE OR REPLACE VIEW {self.latest_view}{self._on_cluster()} AS {select}")

    def _evolve(self, client: Client, rows: Sequence[Row]) -> None:
        assert self.schema is not None
        new, widen = self.schema.plan(rows)
        if not new and not widen:
            return
        changes = [
            f"ADD COLUMN IF NOT EXISTS {quote_identifier(n)} {self._column_type(n, k)}"
            for n, k in new.items()
        ] + [f"MODIFY COLUMN {quote_identifier(n)} Nullable(String)" for n in widen]
        client.command(f"ALTER TABLE {self.table}{self._on_cluster()} {', '.join(changes)}")
        self.schema.applied(new, widen)
        self._create_view(client)  # a view's SELECT * is fixed when the view is made

    def _insert(self, client: Client, rows: Sequence[Row]) -> list[Rejected]:
        erased = Status.ERASED.value

        def insert(part: Sequence[Row]) -> None:
            # is_deleted defaults to 0: only an erasure marker spells it out
            block = b"\n".join(
                [
                    orjson.dumps(row.values | {DELETED: 1})
                    if row.values.get("status") == erased
                    else orjson.dumps(row.values)
                    for row in part
                ]
            )
            try:
                client.raw_insert(self.table, None, block, settings=JSON_INPUT, fmt="JSONEachRow")
            except DatabaseError as exc:
                if blames_a_row(exc):
                    raise RecordRejected(describe(exc)) from exc
                raise

        return write_or_split(rows, insert, (DataError, RecordRejected), self.name)
