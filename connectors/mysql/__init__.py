"""MySQL and MariaDB: its settings section and its line in ``connectors.registry``.

The connector itself, with the driver (PyMySQL), is ``connectors.mysql.warehouse``; it is
imported only when a MySQL connector starts, so that every other process reads and checks
``warehouse.mysql_dsn`` without loading PyMySQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.base import Warehouse, WarehouseKind
from streams.settings import Section, Setting, Settings, text

__all__ = ["NAME", "SECTION", "WAREHOUSE", "MySQLSettings"]

NAME = "mysql"


@dataclass(frozen=True, slots=True)
class MySQLSettings:
    """Where the MySQL connector writes (``warehouse.mysql_dsn``)."""

    dsn: str = "mysql://root@127.0.0.1:3306/test"


SECTION = Section(
    MySQLSettings,
    (Setting("warehouse.mysql_dsn", "RETROSTITCH_MYSQL_DSN", text, "dsn", MySQLSettings().dsn),),
)


def _connect(settings: Settings) -> Warehouse:
    from connectors.mysql.warehouse import MySQLWarehouse

    return MySQLWarehouse(settings)


WAREHOUSE = WarehouseKind(
    name=NAME,
    title="MySQL / MariaDB",
    status_port=8084,
    driver="PyMySQL (pure Python: no C client to build)",
    driver_modules=("pymysql",),
    section=SECTION,
    connect=_connect,
)
