"""ClickHouse: its settings section and its line in ``connectors.registry``.

The connector itself, with the driver (clickhouse-connect, and chdb for the engine
in-process), is ``connectors.clickhouse.warehouse``; it is imported only when a ClickHouse
connector starts, so that every other process reads and checks ``warehouse.clickhouse_*``
without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.base import Warehouse, WarehouseKind
from streams.settings import Section, Setting, Settings, text

__all__ = ["NAME", "SECTION", "WAREHOUSE", "ClickHouseSettings"]

NAME = "clickhouse"


@dataclass(frozen=True, slots=True)
class ClickHouseSettings:
    """Where the ClickHouse connector writes (``warehouse.clickhouse_*``)."""

    #: ``http(s)://user:password@host:port``, or ``chdb://path`` for the engine in-process
    url: str = "chdb://./state/clickhouse"
    database: str = "default"
    cluster: str = ""  # set: ReplicatedReplacingMergeTree ON CLUSTER


def _cluster(value: Any) -> str:
    return "" if value is None else str(value).strip()


_C = ClickHouseSettings()
SECTION = Section(
    ClickHouseSettings,
    (
        Setting("warehouse.clickhouse_url", "RETROSTITCH_CLICKHOUSE_URL", text, "url", _C.url),
        Setting(
            "warehouse.clickhouse_database",
            "RETROSTITCH_CLICKHOUSE_DATABASE",
            text,
            "database",
            _C.database,
        ),
        Setting(
            "warehouse.clickhouse_cluster",
            "RETROSTITCH_CLICKHOUSE_CLUSTER",
            _cluster,
            "cluster",
            _C.cluster,
        ),
    ),
)


def _connect(settings: Settings) -> Warehouse:
    from connectors.clickhouse.warehouse import ClickHouseWarehouse

    return ClickHouseWarehouse(settings)


WAREHOUSE = WarehouseKind(
    name=NAME,
    title="ClickHouse",
    status_port=8081,
    driver="clickhouse-connect (chdb in-process by default)",
    driver_modules=("clickhouse_connect", "chdb"),
    section=SECTION,
    connect=_connect,
)
