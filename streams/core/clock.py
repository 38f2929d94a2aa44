"""Time as the stitcher reads it: a record's own, never later than the worker's clock.

Expiry and the merge limit's window go by the records' own timestamps, so that a replay
of the same records expires what the live run expired; a producer whose clock runs far
ahead must not expire everything, so a record's time is capped at the worker's clock.
"""

from __future__ import annotations

__all__ = ["DAY_MS", "capped"]

DAY_MS = 24 * 3600 * 1000


def capped(timestamp: int, clock_ms: int | None) -> int:
    """A record's time (ms), never later than the clock; the clock's when it has none
    (``timestamp`` 0 or less); 0 when neither is known."""
    if timestamp <= 0:
        return clock_ms or 0
    return timestamp if clock_ms is None else min(timestamp, clock_ms)
