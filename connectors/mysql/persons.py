"""The persons of a MySQL events table: the tables beside it that give each row its person.

``<table>_persons`` (one row per identifier, written as the other tables are),
``<table>_person_merges`` (each person merged away, and the person it went to last) and
``<table>_persons_lock``, one row whose lock orders the two writers: a batch of rows takes it
in share mode while its rows take their person (``resolve_batch``), merges and re-labelling
take it for update (``merge``, ``relabel``), so a row written while a merge runs never keeps
the old person. Identifiers are quoted by the caller; values are always parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pymysql

from connectors.merges import named, plan
from connectors.rows import PersonMerge, Row

__all__ = ["PersonTables"]

#: a person's or an identifier's id: 32 hex digits (``streams.core.persons.person_id``)
PERSON_TYPE = "VARCHAR(64)"
DUPLICATE_INDEX = 1061


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class PersonTables:
    """The persons statements of one events table (names quoted in full)."""

    def __init__(
        self,
        events: str,
        persons: str,
        merges: str,
        lock_row: str,
        key: Sequence[str],
        others: Sequence[str] = (),
    ) -> None:
        """``events``: the table whose rows this writer resolves; ``others``: tables
        whose rows name their person too, re-labelled with it (the user mapping table)."""
        self.events, self.persons, self.merges, self.lock_row = events, persons, merges, lock_row
        self.key = tuple(key)
        self.labelled = (events, *others)

    def create(self, cursor: Any) -> None:
        """The merges and the lock row, the events table's person columns, and the indexes
        the re-labelling reads (the persons table is the warehouse's to make)."""
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.merges} (`from` {PERSON_TYPE} PRIMARY KEY,"
            f" `into` {PERSON_TYPE} NOT NULL, version BIGINT NOT NULL, INDEX (`into`))"
            " DEFAULT CHARSET = utf8mb4"
        )
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.lock_row} (id INT PRIMARY KEY)"
            " DEFAULT CHARSET = utf8mb4"
        )
        cursor.execute(f"INSERT IGNORE INTO {self.lock_row} (id) VALUES (1)")
        for table, column in (
            (self.events, "person_key"),
            (self.events, "person_id"),
            (self.persons, "person_id"),
        ):
            with contextlib.suppress(pymysql.MySQLError):  # there already
                cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {PERSON_TYPE}")
            try:
                cursor.execute(f"ALTER TABLE {table} ADD INDEX ({_quoted(column)}(32))")
            except pymysql.MySQLError as exc:
                if not exc.args or exc.args[0] != DUPLICATE_INDEX:
                    raise

    def lock(self, cursor: Any, *, exclusive: bool) -> None:
        """Take the lock row for this transaction: for update, or in share mode."""
        mode = "FOR UPDATE" if exclusive else "LOCK IN SHARE MODE"
        cursor.execute(f"SELECT 1 FROM {self.lock_row} WHERE id = 1 {mode}")

    def merge(self, cursor: Any, merges: Sequence[PersonMerge]) -> None:
        """A batch's merges in order (``connectors.merges``): one read of the merge rows they
        name, then one statement per table: the merge rows, and every row of a person merged
        away moved to where it went."""
        people = sorted(named(merges))
        marks = ", ".join(["%s"] * len(people))
        cursor.execute(
            f"SELECT `from`, `into` FROM {self.merges} WHERE `from` IN ({marks})", people
        )
        done = plan(merges, {str(a): str(b) for a, b in cursor.fetchall()})
        if not done.rows:
            return
        rows = ", ".join(["(%s, %s, %s)"] * len(done.rows))
        cursor.execute(
            f"INSERT INTO {self.merges} (`from`, `into`, version) VALUES {rows}"
            " ON DUPLICATE KEY UPDATE `into` = VALUES(`into`)",
            [
                part
                for person, (into, version) in done.rows.items()
                for part in (person, into, version)
            ],
        )
        cases = " ".join(["WHEN %s THEN %s"] * len(done.moved))
        moved = [part for pair in done.moved.items() for part in pair]
        losers = list(done.moved)
        within = ", ".join(["%s"] * len(losers))
        for table, column in (
            (self.merges, "`into`"),
            *((t, "person_id") for t in (self.persons, *self.labelled)),
        ):
            cursor.execute(
                f"UPDATE {table} SET {column} = CASE {column} {cases} END"
                f" WHERE {column} IN ({within})",
                [*moved, *losers],
            )

    def relabel(self, cursor: Any, identifiers: list[str]) -> None:
        """The persons rows of ``identifiers`` through the merges, then their rows."""
        marks = ", ".join(["%s"] * len(identifiers))
        cursor.execute(
            f"UPDATE {self.persons} p JOIN {self.merges} m ON m.`from` = p.person_id"
            f" SET p.person_id = m.`into` WHERE p.identifier_id IN ({marks})",
            identifiers,
        )
        for table in self.labelled:
            cursor.execute(
                f"UPDATE {table} e JOIN {self.persons} p ON e.person_key = p.identifier_id"
                f" SET e.person_id = p.person_id WHERE p.identifier_id IN ({marks})"
                " AND NOT (e.person_id <=> p.person_id)",
                identifiers,
            )

    def resolve_batch(self, cursor: Any, rows: Sequence[Row]) -> None:
        """The batch's rows' persons: their persons row's, else where a merge took their
        identifier's own person, else that person (``person_key``)."""
        key = ", ".join(f"e.{_quoted(name)}" for name in self.key)
        row = "(" + ", ".join(["%s"] * len(self.key)) + ")"
        cursor.execute(
            f"UPDATE {self.events} e LEFT JOIN {self.persons} p ON p.identifier_id = e.person_key"
            f" LEFT JOIN {self.merges} m ON m.`from` = e.person_key"
            " SET e.person_id = COALESCE(p.person_id, m.`into`, e.person_key)"
            f" WHERE ({key}) IN ({', '.join([row] * len(rows))})",
            [part for r in rows for part in r.key],
        )
