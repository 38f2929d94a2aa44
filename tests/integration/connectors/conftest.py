"""Settings for the connector tests: a warehouse of their own per test (dropped after)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pymysql
import pytest

from connectors.clickhouse import ClickHouseSettings
from connectors.mysql import MySQLSettings
from connectors.mysql.warehouse import connection_options, quoted
from streams.ops.topics import ensure_topics
from streams.settings import Settings, WarehouseSettings
from tests.integration.harness import Pipeline, postgres_schema


@pytest.fixture
def warehouse_settings(pipeline: Pipeline, postgres_dsn: str, tmp_path: Path) -> Iterator[Settings]:
    options = {
        "batch_max_seconds": 0.2,
        "dead_letter_topic": f"{pipeline.settings.app_id}.sink.dlq",
    }
    with postgres_schema(pipeline.settings, postgres_dsn, **options) as settings:
        settings = settings.with_section(
            ClickHouseSettings(url=f"chdb://{tmp_path / 'clickhouse'}")
        )
        ensure_topics(settings)
        yield settings


@pytest.fixture
def mysql_settings(pipeline: Pipeline, mysql_dsn: str) -> Iterator[Settings]:
    """The pipeline's settings, writing a MySQL database of their own (dropped after)."""
    database = f"rs_{uuid.uuid4().hex[:10]}"
    options = connection_options(mysql_dsn)
    admin = pymysql.connect(**{**options, "database": "mysql"}, autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE {quoted(database)}")
    dsn = mysql_dsn.rsplit("/", 1)[0] + f"/{database}"
    warehouse = WarehouseSettings(
        batch_max_seconds=0.2,
        dead_letter_topic=f"{pipeline.settings.app_id}.sink.dlq",
    )
    settings = replace(pipeline.settings, warehouse=warehouse).with_section(MySQLSettings(dsn))
    ensure_topics(settings)
    yield settings
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {quoted(database)}")
    admin.close()
