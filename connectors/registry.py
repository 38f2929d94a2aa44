"""Every warehouse, one line each: what ``retrostitch sink`` offers, and where each is known.

The CLI takes its choices and every warehouse's settings section from ``WAREHOUSES``, the
status ports of the connectors from their entries, and the README's warehouse table is
``readme_table()`` (a test compares them). A warehouse is its package (its settings
section and ``WAREHOUSE`` entry; its writer and driver in ``<name>.warehouse``), its tests,
its Kubernetes manifest, and its line here.
"""

from __future__ import annotations

from typing import Any

from connectors import clickhouse, mysql, postgres
from connectors.base import WarehouseKind
from streams.core.errors import ConfigError
from streams.settings import Section

__all__ = ["README_MARKER", "SECTIONS", "WAREHOUSES", "named", "readme_table"]

WAREHOUSES: tuple[WarehouseKind, ...] = (
    clickhouse.WAREHOUSE,
    postgres.WAREHOUSE,
    mysql.WAREHOUSE,
)

#: every warehouse's settings section, for ``load_settings``
SECTIONS: tuple[Section[Any], ...] = tuple(kind.section for kind in WAREHOUSES)

#: the README line that the warehouse table follows
README_MARKER = (
    "<!-- warehouses: from connectors/registry.py, "
    "checked by tests/unit/connectors/test_registry.py -->"
)


def named(name: str) -> WarehouseKind:
    """The warehouse called ``name`` (``retrostitch sink <name>``)."""
    for kind in WAREHOUSES:
        if kind.name == name:
            return kind
    raise ConfigError(f"no warehouse {name!r}: one of {', '.join(k.name for k in WAREHOUSES)}")


def readme_table() -> str:
    """The README's warehouse table: a header, then one row per warehouse in this order."""
    lines = [
        "| warehouse | command | status port | driver |",
        "|---|---|---|---|",
        *(
            f"| {k.title} | retrostitch sink {k.name} | {k.status_port} | {k.driver} |"
            for k in WAREHOUSES
        ),
    ]
    return "\n".join(lines) + "\n"
