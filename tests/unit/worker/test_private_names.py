"""Every private name of Faust, mode or aiokafka that a worker module touches is listed,
with why, in that module's docstring; and no list names one the module no longer touches.

A name is theirs when the module imports it from them, reaches it on an object of theirs
(an attribute no module of ``streams`` defines), or, in a class built on one of theirs,
reaches or overrides it on ``self`` where their class's source has it. The docstring
lists them under the line ``Private names of Faust, mode and aiokafka used here, and
why:``, each in double backquotes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest

STREAMS = Path(__file__).resolve().parents[3] / "streams"
HEADING = "Private names of Faust, mode and aiokafka used here, and why:"
WORKER = sorted(path.stem for path in (STREAMS / "worker").glob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _ours() -> set[str]:
    """Private names that a module of ``streams`` defines: functions, classes, module
    names, and attributes assigned on ``self`` or ``cls``."""
    names: set[str] = set()
    for path in STREAMS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names |= {node.attr} if _on_self(node) is not None else set()
    return {name for name in names if _private(name)}


def _their_source(cls: object) -> str:
    """The source of the classes of others that ``cls`` is built on ("" for none)."""
    if not isinstance(cls, type):
        return ""
    texts = []
    for base in cls.__mro__[1:]:
        if base is object or base.__module__.startswith("streams"):
            continue
        try:
            texts.append(inspect.getsource(base))
        except (OSError, TypeError):
            continue
    return "\n".join(texts)


def _on_self(node: ast.AST) -> str | None:
    """The name a method defines, or reaches on ``self``/``cls``."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr if node.value.id in {"self", "cls"} else None
    return None


def touched(module: ModuleType, tree: ast.Module, ours: set[str]) -> set[str]:
    """The private names of others that the module's code touches."""
    found: set[str] = set()
    judged: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("streams"):
            found |= {alias.name for alias in node.names if _private(alias.name)}
        if isinstance(node, ast.ClassDef):
            theirs = _their_source(getattr(module, node.name, None))
            for inner in ast.walk(node) if theirs else ():
                name = _on_self(inner)
                if name is not None and _private(name):
                    judged.add(id(inner))
                    if re.search(rf"\b{re.escape(name)}\b", theirs):
                        found.add(name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and id(node) not in judged:
            found |= set() if node.attr in ours else {node.attr}
    return found


def listed(docstring: str | None) -> set[str]:
    """The private names in the docstring's list (the indented block under ``HEADING``)."""
    if docstring is None or HEADING not in docstring:
        return set()
    block = []
    for line in docstring.split(HEADING, 1)[1].splitlines()[1:]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    quoted = re.findall(r"``([^`]+)``", "\n".join(block))
    return {part for text in quoted for part in text.split(".") if _private(part)}


@pytest.mark.parametrize("name", WORKER)
def test_a_worker_module_lists_the_private_names_of_others_it_touches(name: str) -> None:
    module = importlib.import_module(f"streams.worker.{name}")
    tree = ast.parse((STREAMS / "worker" / f"{name}.py").read_text())
    assert listed(module.__doc__) == touched(module, tree, _ours())


def test_the_check_finds_the_names_it_is_about() -> None:
    """The transport overrides, reaches and assigns names of Faust's and aiokafka's."""
    module = importlib.import_module("streams.worker.transport")
    tree = ast.parse((STREAMS / "worker" / "transport.py").read_text())
    found = touched(module, tree, _ours())
    assert {"_drain_messages", "_read_offset", "_fetch_max_wait_ms", "_acked"} <= found
    assert "_sequence" not in found  # ours, on the same class
