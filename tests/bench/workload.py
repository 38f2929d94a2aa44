"""The benchmark's fixed workloads: deterministic streams of ~300-byte Jitsu-shaped events.

    mix a   10,000 anonymous ids, 10 events each (100,000 events); 30% of the ids identify
            at their 6th event, so 5 events wait and the last 4 are stitched at once
    mix b   1,000 anonymous ids, 100 anonymous events each, then one identifying event
            (101,000 events): long histories, 100 events waiting per id
    mix p   mix a's 10,000 anonymous ids, 10 events each, grouped into people of 1 to 4
            devices; 30% of the people identify on every device at its 6th event, each
            device with the person's user id, email or both, so devices link into persons

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
    #: ids grouped into people of 1 to 4 devices, identifying by user id, email or both
    #: (``identify_share``: of the people); else each id is a person of its own
    people: bool = False

    @property
    def identifying_ids(self) -> int:
        if self.people:
            return sum(1 for _, identity in _devices(self) if identity is not None)
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
    "p": Mix("p", ids=10_000, events_per_id=10, identify_share=0.3, identify_at=5, people=True),
}

#: (user id, email) of a device's identification; None: the device never identifies
Identity = tuple[str | None, str | None]

_PAGES = ["/", "/shoes", "/shoes/red-sneaker-42", "/cart", "/checkout", "/blog/how-to-run"]


def event(
    anonymous_id: str, n: int, email: str | None, rng: random.Random, user_id: str | None = None
) -> bytes:
    """One pageview of about 300 bytes, Jitsu's shape."""
    user: dict[str, str] = {"anonymous_id": anonymous_id}
    if user_id is not None:
        user["id"] = user_id
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


def _devices(mix: Mix, seed: int = 11) -> list[tuple[int, Identity | None]]:
    """Each id's person and identification: people of 1 to 4 devices; the first
    ``identify_share`` of them identify on each device by user id, email or both."""
    rng = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < mix.ids:
        sizes.append(min(rng.randint(1, 4), mix.ids - sum(sizes)))
    identifying = round(len(sizes) * mix.identify_share)
    devices: list[tuple[int, Identity | None]] = []
    for person, size in enumerate(sizes):
        for _ in range(size):
            if person >= identifying:
                devices.append((person, None))
                continue
            user_id, email = f"user-{person}", f"person{person}@example.com"
            way = rng.choice(["id", "email", "both"])
            identity = (user_id if way != "email" else None, email if way != "id" else None)
            devices.append((person, identity))
    return devices


def events(mix: Mix, seed: int = 7) -> Iterator[tuple[str, bytes, bool]]:
    """(anonymous id, event, identifies) in stream order."""
    rng = random.Random(seed)
    devices = _devices(mix) if mix.people else None
    plans: list[tuple[str, int]] = []  # (anonymous id, events of it)
    for i in range(mix.ids):
        identifies = _identifies(mix, devices, i)
        total = mix.events_per_id + (mix._extra if identifies else 0)
        plans.append((f"{mix.name}{i:05d}-{rng.getrandbits(32):08x}", total))
    order = [i for i, (_, total) in enumerate(plans) for _ in range(total)]
    rng.shuffle(order)
    position = [0] * len(plans)
    for i in order:
        anonymous_id, _ = plans[i]
        n = position[i]
        position[i] += 1
        known = _identifies(mix, devices, i) and n >= mix.identify_at
        identifies = known and n == mix.identify_at
        user_id, email = None, f"user{i}@example.com" if known else None
        if devices is not None:
            identity = devices[i][1]
            user_id, email = identity if known and identity is not None else (None, None)
        yield anonymous_id, event(anonymous_id, n, email, rng, user_id), identifies


def _identifies(mix: Mix, devices: list[tuple[int, Identity | None]] | None, i: int) -> bool:
    if devices is not None:
        return devices[i][1] is not None
    return i < mix.identifying_ids
