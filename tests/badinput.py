"""Malformed input of every kind the worker must survive, interleaved with good events.

``stream(seed, bad, good)`` gives the records of one input topic as (key, value) in the
order they are produced: ``bad`` malformed or hostile records drawn from ``KINDS`` and
``good`` well-formed events of a few hundred visitors (a third of them identify), each
visitor's good events in their order. What the worker must make of them is computed by
the tests with the pure processor (``oracle``): nothing here decides it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson

from streams.core.rules import RecognitionRules, parse
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import stitch
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore

Record = tuple[bytes | None, bytes | None]

WRONG_TYPES: list[Any] = [{"a": 1}, [1, 2], 1.5, True, None, "", -7, 2**63 - 1, "x" * 300]


def _event(rng: random.Random, n: int) -> dict[str, Any]:
    return {"eventn_ctx_event_id": f"bad-{n}", "user": {"anonymous_id": f"b{rng.randrange(50)}"}}


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(rng.randrange(0, 200))


def _truncated(rng: random.Random, n: int) -> bytes:
    raw = orjson.dumps(_event(rng, n) | {"page": {"url": "/x" * rng.randrange(1, 20)}})
    return raw[: rng.randrange(1, len(raw) - 1)]


def _invalid_utf8(rng: random.Random, n: int) -> bytes:
    raw = orjson.dumps(_event(rng, n))
    cut = raw.index(b"bad-") + 2
    return raw[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]) + raw[cut:]


def _deep(rng: random.Random, n: int) -> bytes:
    depth = 10_000
    return b'{"eventn_ctx_event_id": "deep-%d", "x": ' % n + b"[" * depth + b"]" * depth + b"}"


def _huge(rng: random.Random, n: int) -> bytes:
    event = _event(rng, n) | {"blob": "z" * rng.randrange(2_000_000, 3_000_000)}
    return orjson.dumps(event)


def _nan(rng: random.Random, n: int) -> bytes:
    literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e999999"])
    return b'{"eventn_ctx_event_id": "nan-%d", "v": ' % n + literal + b"}"


def _big_int(rng: random.Random, n: int) -> bytes:
    return b'{"eventn_ctx_event_id": "int-%d", "user": {"anonymous_id": "b1"}, "v": %d}' % (
        n,
        2**64 + rng.randrange(10**12),
    )


def _duplicate_keys(rng: random.Random, n: int) -> bytes:
    return (
        b'{"eventn_ctx_event_id": "dup-%d", "eventn_ctx_event_id": "dup2-%d", '
        b'"user": {"anonymous_id": "b2"}, "user": {"anonymous_id": "b3"}}' % (n, n)
    )


def _wrong_type(rng: random.Random, n: int) -> bytes:
    event: dict[str, Any] = {
        "eventn_ctx_event_id": f"wrong-{n}",
        "user": {"anonymous_id": "b4", "id": "u", "email": "e@x"},
        "user_agent": "Mozilla",
    }
    node = rng.choice(["eventn_ctx_event_id", "user", "anonymous_id", "id", "email", "user_agent"])
    value = rng.choice(WRONG_TYPES)
    if node in ("anonymous_id", "id", "email"):
        event["user"][node] = value
    else:
        event[node] = value
    return orjson.dumps(event)


def _long_ids(rng: random.Random, n: int) -> bytes:
    long = "i" * 100_000 + str(n)
    event: dict[str, Any] = rng.choice(
        [
            {"eventn_ctx_event_id": long, "user": {"anonymous_id": "b5"}},
            {"eventn_ctx_event_id": f"long-{n}", "user": {"anonymous_id": long}},
            {"eventn_ctx_event_id": f"long-{n}", "user": {"anonymous_id": "b6", "email": long}},
        ]
    )
    return orjson.dumps(event)


def _not_an_object(rng: random.Random, n: int) -> bytes:
    return rng.choice([b"[]", b'"text"', b"42", b"null", b"true", b"   ", b""])


#: every kind of malformed or hostile record, and how often it is drawn
KINDS: list[tuple[Callable[[random.Random, int], bytes | None], int]] = [
    (_random_bytes, 20),
    (_truncated, 15),
    (_invalid_utf8, 10),
    (_deep, 3),
    (_nan, 8),
    (_big_int, 4),
    (_duplicate_keys, 4),
    (_wrong_type, 20),
    (_long_ids, 3),
    (_not_an_object, 8),
    (lambda rng, n: None, 3),  # a tombstone
]
HUGE = 3  # multi-megabyte records in every stream, whatever the seed


def _good(rng: random.Random, count: int) -> list[bytes]:
    visitors = [f"visitor-{n}" for n in range(max(count // 10, 1))]
    identified: set[str] = set()
    lines = []
    for n in range(count):
        visitor = rng.choice(visitors)
        user: dict[str, Any] = {"anonymous_id": visitor}
        if visitor not in identified and rng.random() < 0.1:
            user["email"] = f"{visitor}@example.com"
            identified.add(visitor)
        lines.append(orjson.dumps({"eventn_ctx_event_id": f"good-{n}", "user": user}))
    return lines


def stream(seed: int, bad: int, good: int) -> list[Record]:
    """``bad`` malformed records (``HUGE`` of them multi-megabyte) and ``good`` events,
    interleaved at random; each keyed by its anonymous id where the rules find one."""
    rng = random.Random(seed)
    makers = [maker for maker, weight in KINDS for _ in range(weight)]
    malformed = [_huge(rng, n) for n in range(HUGE)]
    malformed += [rng.choice(makers)(rng, n) for n in range(HUGE, bad)]
    values: list[bytes | None] = []
    good_lines, bad_lines = _good(rng, good), malformed
    g = b = 0
    while g < len(good_lines) or b < len(bad_lines):
        left_good, left_bad = len(good_lines) - g, len(bad_lines) - b
        if rng.random() * (left_good + left_bad) < left_good:
            values.append(good_lines[g])
            g += 1
        else:
            values.append(bad_lines[b])
            b += 1
    return [(_key(value), value) for value in values]


def _key(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    try:
        anonymous_id = parse(value, RecognitionRules()).anonymous_id
    except ValueError:
        return None
    return None if anonymous_id is None else anonymous_id.encode()


def oracle(records: list[Record], rules: RecognitionRules) -> tuple[dict[str, int], list[bytes]]:
    """What the rules make of ``records``: the latest version of each event id on the sink,
    and the values of the dead letters (``None`` as b""), computed in memory."""
    inputs = [InputRecord("in", 0, n, key, value) for n, (key, value) in enumerate(records)]
    done = stitch(inputs, PartitionState(MemoryStore()), rules, Counters())
    latest: dict[str, int] = {}
    for record in done.sink:
        event_id = record.key.decode()
        latest[event_id] = max(latest.get(event_id, 0), record.version)
    return latest, [letter.record.value or b"" for letter in done.dead]
