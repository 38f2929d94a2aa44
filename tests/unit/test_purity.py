"""The core, the state layer and the pipeline stay pure: no Kafka client, Faust, RocksDB or database
driver, no clock, disk or network (``streams.state.rocks``, the RocksDB adapter, aside).
import-linter (`make lint`) checks the imports between packages; this checks every
module's own imports, standard library included, and what importing them loads."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PURE = sorted(
    str(path.relative_to(ROOT))
    for package in ("streams/core", "streams/state", "streams/pipeline")
    for path in (ROOT / package).glob("*.py")
    if path.name != "rocks.py"
)
#: Kafka clients, Faust, RocksDB and every database driver: the list import-linter's
#: contract for the state layer forbids (pyproject.toml), so that both checks name the same
STATE_CONTRACT = next(
    contract
    for contract in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    if contract.get("source_modules") == ["streams.state"]
)
FORBIDDEN = {
    *STATE_CONTRACT["forbidden_modules"],
    "socket", "asyncio", "subprocess", "os", "pathlib", "time", "random", "threading",
}  # fmt: skip


def test_the_pure_packages_are_all_checked() -> None:
    assert "streams/core/rules.py" in PURE
    assert "streams/state/partition.py" in PURE
    assert "streams/pipeline/stitch.py" in PURE
    assert "streams/state/rocks.py" not in PURE
    assert {"faust", "confluent_kafka", "rocksdict"} <= FORBIDDEN  # read from the contract


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


def test_importing_the_pure_packages_loads_no_io_library() -> None:
    modules = [path.removesuffix(".py").replace("/", ".") for path in PURE]
    libraries = sorted(FORBIDDEN - {"os", "time", "pathlib", "threading"})  # Python's own
    check = (
        f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
        f"print([m for m in {libraries!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
