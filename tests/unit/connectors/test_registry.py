"""The registry is where every warehouse is known: the CLI, the status ports, the settings,
the import contracts and the README take their warehouses from it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from connectors.postgres import PostgresSettings
from connectors.registry import README_MARKER, SECTIONS, WAREHOUSES, named, readme_table
from streams.cli import build_parser
from streams.core.errors import ConfigError
from streams.ops.status import DEFAULT_PORTS
from streams.settings import SETTINGS, load_settings

ROOT = Path(__file__).parents[3]
EVERY_SETTING = (*SETTINGS, *(row for section in SECTIONS for row in section.settings))


def _sink_choices() -> list[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    sink = commands.choices["sink"]
    warehouse = next(a for a in sink._actions if a.dest == "warehouse")
    return list(warehouse.choices)


def test_the_cli_offers_every_warehouse_of_the_registry_in_its_order() -> None:
    assert _sink_choices() == [kind.name for kind in WAREHOUSES]
    assert all(named(kind.name) is kind for kind in WAREHOUSES)
    with pytest.raises(ConfigError, match="no warehouse 'oracle'"):
        named("oracle")


def test_each_connector_has_a_status_port_of_its_own() -> None:
    ports = [kind.status_port for kind in WAREHOUSES]
    assert len(set(ports)) == len(ports)
    assert not set(ports) & {DEFAULT_PORTS["worker"], DEFAULT_PORTS["replay"]}


def test_the_readme_table_is_the_registrys() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.count(README_MARKER) == 1, "README.md: the warehouse table's marker line"
    after = readme.split(README_MARKER + "\n", 1)[1]
    table = re.match(r"(?:\|.*\|\n)+", after)
    assert table is not None, "README.md: a table right after the marker line"
    assert table.group(0) == readme_table()
    assert readme_table().splitlines()[0] == "| warehouse | command | status port | driver |"


def test_every_setting_has_a_unique_key_and_variable() -> None:
    """(docs/configuration.md lists each: tests/unit/test_docs.py)"""
    keys = [s.key for s in EVERY_SETTING]
    variables = [s.env for s in EVERY_SETTING if s.env]
    assert len(keys) == len(set(keys))
    assert len(variables) == len(set(variables))


def test_every_section_is_its_own_and_defaults_as_its_dataclass() -> None:
    kinds = [section.kind for section in SECTIONS]
    assert len(set(kinds)) == len(kinds)
    for section in SECTIONS:
        defaults = section.kind()
        for row in section.settings:
            assert row.key.startswith("warehouse.")
            assert getattr(defaults, row.target) == row.default, row.key


def test_any_process_reads_and_checks_every_warehouses_keys(tmp_path: Path) -> None:
    config = tmp_path / "retrostitch.yaml"
    config.write_text("warehouse:\n  postgres_schema: analytics\n  table: t\n")
    environ = {"RETROSTITCH_POSTGRES_DSN": "postgresql://h/d"}
    settings = load_settings(config, environ=environ, sections=SECTIONS)
    assert settings.section(PostgresSettings) == PostgresSettings("postgresql://h/d", "analytics")
    assert settings.warehouse.table == "t"
    assert load_settings(environ={}, sections=SECTIONS) == load_settings(environ={})
    config.write_text("warehouse:\n  postgres_shema: analytics\n")
    with pytest.raises(ConfigError, match=re.escape("unknown setting 'warehouse.postgres_shema'")):
        load_settings(config, environ={}, sections=SECTIONS)
    with pytest.raises(ConfigError, match="environment variable RETROSTITCH_CLICKHOUSE_URL"):
        load_settings(environ={"RETROSTITCH_CLICKHOUSE_URL": " "}, sections=SECTIONS)


def test_the_import_contracts_forbid_every_warehouses_driver_below_the_connectors() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = pyproject["tool"]["importlinter"]["contracts"]
    below = [
        c for c in contracts if c.get("source_modules") in (["streams.core"], ["streams.state"])
    ]
    assert len(below) == 2
    for kind in WAREHOUSES:
        for contract in below:
            assert set(kind.driver_modules) <= set(contract["forbidden_modules"]), contract["name"]


def test_reading_every_warehouses_settings_loads_no_driver() -> None:
    """A worker reads and checks every warehouse's keys; only a connector loads a driver."""
    drivers = sorted({module for kind in WAREHOUSES for module in kind.driver_modules})
    check = (
        "import sys; from connectors.registry import SECTIONS; "
        "from streams.settings import load_settings; load_settings(sections=SECTIONS); "
        f"print([m for m in {drivers!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
