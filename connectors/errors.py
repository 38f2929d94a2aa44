"""Errors of the connectors.

    ConnectorError
    ├── WarehouseUnavailable  transient (connection refused or lost, server restarting):
    │                         the batch is retried with capped backoff; nothing is committed
    ├── RecordRejected        the warehouse refuses one record (bad value, too large): that
    │                         record goes to the dead-letter topic, the rest of the batch lands
    └── BadSinkRecord         a sink record that is not in the documented format: dead letter

A driver's exceptions are translated into these in its warehouse's module, where they are
caught, with ``raise … from exc``; connection strings never appear in a message.
"""

from __future__ import annotations

from streams.core.errors import RetrostitchError

__all__ = [
    "BadSinkRecord",
    "ConnectorError",
    "RecordRejected",
    "WarehouseUnavailable",
    "describe",
]


def describe(exc: BaseException) -> str:
    """A driver error in one line, with the server's code where it has one; the drivers'
    messages name host and port at most, never the password of a connection string."""
    lines = str(exc).strip().splitlines()
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' [{state}]' if state else ''}: {lines[0] if lines else ''}"[
        :300
    ]


class ConnectorError(RetrostitchError):
    """Base of the connectors' errors."""


class WarehouseUnavailable(ConnectorError):
    """The warehouse cannot be reached now; the same batch is tried again later."""


class RecordRejected(ConnectorError):
    """The warehouse refused a write for a reason that retrying will not change."""


class BadSinkRecord(ConnectorError, ValueError):
    """A sink record that cannot become a row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
