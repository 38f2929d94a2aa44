"""The stitching rules stay pure: no Kafka client, Faust, RocksDB or database driver."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PURE = ["streams/rules.py", "streams/pointer.py", "streams/errors.py"]
FORBIDDEN = {
    "faust", "mode", "rocksdict", "confluent_kafka", "aiokafka", "psycopg", "clickhouse_connect",
    "chdb", "socket", "asyncio", "subprocess", "os", "pathlib", "time", "random",
}  # fmt: skip
ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("path", PURE)
def test_pure_modules_import_nothing_impure(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def test_importing_the_rules_loads_no_io_library() -> None:
    libraries = sorted(FORBIDDEN - {"os", "time", "pathlib"})  # loaded by Python itself
    check = f"import sys, streams.core.rules; print([m for m in {libraries!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
