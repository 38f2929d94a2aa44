"""Every error retrostitch raises on purpose, in one hierarchy.

    RetrostitchError
    ├── ConfigError      bad configuration: names the key and what was expected; fails at start
    ├── BrokerError      the local broker could not start, or a topic could not be made
    ├── BadRecord        a record that can never be processed: goes to the dead-letter topic
    └── StateError       an id that cannot be stored: goes to the dead-letter topic

Errors of the Kafka client or of RocksDB that are not ours are translated at the boundary
(``raise … from exc``) where we can say more than they do, and otherwise left to crash
the worker loudly: a worker that stops is restarted and resumes from its last commit.
"""

from __future__ import annotations

__all__ = ["BadRecord", "BrokerError", "ConfigError", "RetrostitchError", "StateError"]


class RetrostitchError(Exception):
    """Base of every error raised on purpose by retrostitch."""


class ConfigError(RetrostitchError, ValueError):
    """A setting is missing or malformed; the message names the key."""


class BrokerError(RetrostitchError, RuntimeError):
    """The local broker could not be started or reached, or a topic could not be created."""


class BadRecord(RetrostitchError, ValueError):
    """A record that can never be processed; it goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StateError(RetrostitchError, ValueError):
    """An id cannot be stored (too long for the key layout)."""
