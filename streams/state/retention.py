"""What state keeps, and for how long (docs/rules.md: bounded state).

The bounds are applied inside the same batches and the same changelog as every other
change, so a restart or a takeover keeps them: an event's held copy and seen marker leave
state ``ttl_ms`` after its timestamp (a bounded number per batch, oldest first), and an
anonymous id holds at most ``max_held_per_id`` events (holding one more drops its oldest).
A dropped held event stays in the warehouse as it was last emitted. ``Dropped`` counts
what one batch let go.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.clock import DAY_MS

__all__ = ["Dropped", "Retention"]


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many events state keeps per anonymous id."""

    #: an event's held copy and seen marker leave state this long after its timestamp;
    #: None keeps them for ever (state then grows without bound)
    ttl_ms: int | None = 30 * DAY_MS
    #: the most events one anonymous id holds; holding one more drops its oldest. None: no cap
    max_held_per_id: int | None = 10_000
    #: an anonymous id forgets its identity this long after it was last identified (its
    #: later events wait again, for the next identification); None: never
    identity_ttl_ms: int | None = None
    #: the most arrivals one batch expires per partition (a backlog of expiries, after a
    #: long stop, is worked off over the next batches instead of stalling one)
    expire_per_batch: int = 20_000


@dataclass(slots=True)
class Dropped:
    """What the bounds let go in one batch."""

    expired: int = 0  # held events past the TTL
    capped: int = 0  # held events over an anonymous id's cap
    forgotten: int = 0  # seen markers past the TTL (with their arrivals)
    identities_expired: int = 0  # identities past the identity TTL
    claims_expired: int = 0  # merge-limit grants that left with the window
