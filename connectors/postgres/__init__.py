"""PostgreSQL: its settings section and its line in ``connectors.registry``.

The connector itself, with the driver (psycopg 3), is ``connectors.postgres.warehouse``;
it is imported only when a Postgres connector starts, so that every other process reads
and checks ``warehouse.postgres_*`` without loading psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.base import Warehouse, WarehouseKind
from streams.settings import Section, Setting, Settings, text

__all__ = ["NAME", "SECTION", "WAREHOUSE", "PostgresSettings"]

NAME = "postgres"


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Where the Postgres connector writes (``warehouse.postgres_*``)."""

    dsn: str = "postgresql://postgres@127.0.0.1:5432/test"
    schema: str = "public"


_P = PostgresSettings()
SECTION = Section(
    PostgresSettings,
    (
        Setting("warehouse.postgres_dsn", "RETROSTITCH_POSTGRES_DSN", text, "dsn", _P.dsn),
        Setting(
            "warehouse.postgres_schema", "RETROSTITCH_POSTGRES_SCHEMA", text, "schema", _P.schema
        ),
    ),
)


def _connect(settings: Settings) -> Warehouse:
    from connectors.postgres.warehouse import PostgresWarehouse

    return PostgresWarehouse(settings)


WAREHOUSE = WarehouseKind(
    name=NAME,
    title="PostgreSQL",
    status_port=8082,
    driver="psycopg 3",
    driver_modules=("psycopg",),
    section=SECTION,
    connect=_connect,
)
