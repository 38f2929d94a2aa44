"""Counters as typed fields: one dataclass per kind of process, one field per counter.

A process's counters are a dataclass whose fields are made by ``counter``; each field is
served on /metrics as ``retrostitch_<field>_total`` (``values``), and the fields given a
section are what ``retrostitch status`` shows, in field order (``sections``). A counter's
name is therefore written once, as its field.
"""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any

__all__ = ["Sections", "counter", "sections", "values"]

#: (title, counter names) in the order ``retrostitch status`` shows them
Sections = tuple[tuple[str, tuple[str, ...]], ...]


def counter(section: str | None = None) -> Any:
    """A counter field, starting at 0; ``section``: where ``retrostitch status`` shows it
    (None: served on /metrics only)."""
    return field(default=0, metadata={"section": section})


def sections(counters: type) -> Sections:
    """The shown counters of a counters dataclass, grouped by section in field order."""
    grouped: dict[str, list[str]] = {}
    for item in fields(counters):
        title = item.metadata.get("section")
        if title is not None:
            grouped.setdefault(title, []).append(item.name)
    return tuple((title, tuple(names)) for title, names in grouped.items())


def values(counters: Any) -> dict[str, float]:
    """Every counter of a counters dataclass instance, by name."""
    return {item.name: getattr(counters, item.name) for item in fields(counters)}
