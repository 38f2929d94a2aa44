"""The benchmark's fixed workloads: deterministic streams of ~300-byte Jitsu-shaped events.

    mix a   10,000 anonymous ids, 10 events each (100,000 events); 30% of the ids identify
            at their 6th event, so 5 events wait and the last 4 are stitched at once
    mix b   1,000 anonymous ids, 100 anonymous events each, then one identifying event
            (101,000 events): long histories, 100 events waiting per id

Each id's events keep their order; ids are interleaved at random (a fixed seed), as
visitors of a real site are.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

__all__ = ["MIXES", "Mix", "event", "events"]


@dataclass(frozen=True, slots=True)
class Mix:
    name: str
    ids: int
    events_per_id: int  # anonymous events, plus the identifying one where an id identifies
    identify_share: float
    identify_at: int  # the identifying event's 0-based position in its id's sequence

    @property
    def identifying_ids(self) -> int:
        return round(self.ids * self.identify_share)

    @property
    def total(self) -> int:
        return self.ids * self.events_per_id + self._extra * self.identifying_ids

    @property
    def _extra(self) -> int:
        return 1 if self.identify_at >= self.events_per_id else 0


MIXES = {
    "a": Mix("a", ids=10_000, events_per_id=10, identify_share=0.3, identify_at=5),
    "b": Mix("b", ids=1_000, events_per_id=100, identify_share=1.0, identify_at=100),
}

_PAGES = ["/", "/shoes", "/shoes/red-sneaker-42", "/cart", "/checkout", "/blog/how-to-run"]


def event(anonymous_id: str, n: int, email: str | None, rng: random.Random) -> bytes:
    """One pageview of about 300 bytes, Jitsu's shape."""
    user: dict[str, str] = {"anonymous_id": anonymous_id}
    if email is not None:
        user["email"] = email
    return orjson.dumps(
        {
            "eventn_ctx_event_id": f"{anonymous_id}-{n:04d}",
            "event_type": "pageview",
            "_timestamp": f"2026-11-25T10:{n % 60:02d}:{rng.randrange(60):02d}.{n:03d}Z",
            "page": {
                "url": "https://shop.example" + rng.choice(_PAGES),
                "title": "Running shoes",
            },
            "user": user,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
            "source_ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        }
    )


def events(mix: Mix, seed: int = 7) -> Iterator[tuple[str, bytes, bool]]:
    """(anonymous id, event, identifies) in stream order."""
    rng = random.Random(seed)
    plans: list[tuple[str, int]] = []  # (anonymous id, events of it)
    for i in range(mix.ids):
        identifies = i < mix.identifying_ids
        total = mix.events_per_id + (mix._extra if identifies else 0)
        plans.append((f"{mix.name}{i:05d}-{rng.getrandbits(32):08x}", total))
    order = [i for i, (_, total) in enumerate(plans) for _ in range(total)]
    rng.shuffle(order)
    position = [0] * len(plans)
    for i in order:
        anonymous_id, _ = plans[i]
        n = position[i]
        position[i] += 1
        identifies = i < mix.identifying_ids and n == mix.identify_at
        known = i < mix.identifying_ids and n >= mix.identify_at
        email = f"user{i}@example.com" if known else None
        yield anonymous_id, event(anonymous_id, n, email, rng), identifies
