"""A crash while a batch's state changes go to the changelog loses nothing.

The worker emits a batch's sink records, then sends its state changes to the changelog;
a crash in between may land any prefix of those changes, and the batch is then processed
again over what landed (``streams.worker.app``). Whatever the prefix, the warehouse must end
up as if nothing had crashed.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.core.rules import Policy, RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import stitch
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.unit.stitching import event

BEFORE = [
    event("b0", "B"),
    event("b00", "B"),
    event("c0", "C", email="c@x.com"),
    event("d0", "D"),
]
BATCH = [
    event("a1", "A"),
    event("a2", "A"),
    event("b1", "B"),
    event("d1", "D", user_id="u-d"),  # D's waiting event was held before this batch
    event("a3", "A", email="a@x.com"),
    event("a4", "A"),
    event("c1", "C"),
    event("c2", "C", email="c2@x.com"),
]
AFTER = [event("b2", "B", user_id="u-b"), event("a5", "A"), event("a6", "A", user_id="u-a")]


def _records(values: list[bytes], first_offset: int) -> list[InputRecord]:
    return [InputRecord("t", 0, first_offset + i, None, v) for i, v in enumerate(values)]


def _latest(values: list[bytes]) -> dict[str, tuple[int, Any]]:
    """Per event id: the highest version and its content; per anonymous id's mapping row,
    the content of its highest version (a re-run may map again one version up: what
    matters is that the latest mapping is the right one)."""
    latest: dict[str, tuple[int, Any]] = {}
    for value in values:
        record = orjson.loads(value)
        if record["status"] == "identity":
            key = f"identity:{record['anonymous_id']}"
            content = (record["mapping"], record["identification"])
        else:
            key, content = record["event_id"], record["event"]["user"]
        if record["version"] > latest.get(key, (0, None))[0]:
            latest[key] = (record["version"], content)
    return {k: (0, c) if k.startswith("identity:") else (v, c) for k, (v, c) in latest.items()}


def _batch(store: MemoryStore, values: list[bytes], offset: int, rules: RecognitionRules) -> Any:
    state = PartitionState(store, mappings=True)
    return stitch(_records(values, offset), state, rules, Counters())


@pytest.mark.parametrize("claims", [False, True], ids=["", "merge-limit"])
@pytest.mark.parametrize(
    "policy",
    [
        Policy.RETAIN,
        pytest.param(
            Policy.LATEST,
            marks=pytest.mark.xfail(
                strict=True,
                reason="known gap: under `latest`, a prefix holding the batch's new identity "
                "but not its seen markers makes the re-run stitch earlier events at once, at "
                "versions the first run already used with other values "
                "(docs/internals.md: crash safety)",
            ),
        ),
    ],
)
def test_any_prefix_of_a_batchs_changelog_then_a_rerun_loses_nothing(
    policy: Policy, claims: bool
) -> None:
    rules = RecognitionRules(policy=policy, claims=claims)  # claims: kept until answered
    store = MemoryStore()
    before = _batch(store, BEFORE, 0, rules)
    store.write(before.changes)
    snapshot = list(store.scan(b""))

    clean = _batch(store, BATCH, 10, rules)
    store.write(clean.changes)
    after = _batch(store, AFTER, 20, rules)
    sink = [r.value for r in before.sink + clean.sink + after.sink]
    expected = _latest(sink)

    for landed in range(len(clean.changes) + 1):
        crashed = MemoryStore()
        crashed.write(snapshot)
        crashed.write(clean.changes[:landed])  # then the worker died
        rerun = _batch(crashed, BATCH, 10, rules)  # the batch again, on another worker
        crashed.write(rerun.changes)
        later = _batch(crashed, AFTER, 20, rules)
        emitted = [r.value for r in before.sink + clean.sink + rerun.sink + later.sink]
        assert _latest(emitted) == expected, f"{landed} of {len(clean.changes)} changes landed"
