"""Properties of the stitcher over generated streams (hypothesis), both policies."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.rules import Policy, RecognitionRules
from tests.unit.stitching import Run, event

ANONYMOUS_IDS = ["A", "B", "C"]
EMAILS = [None, None, None, "ann@x.com", "bob@x.com"]  # mostly anonymous events
policies = st.sampled_from(list(Policy))
steps = st.lists(st.tuples(st.sampled_from(ANONYMOUS_IDS), st.sampled_from(EMAILS)), max_size=40)
PROPERTY = settings(max_examples=150, deadline=None)


def _stream(spec: list[tuple[str, str | None]]) -> list[bytes]:
    return [
        event(f"e{i}", anonymous_id, email=email) for i, (anonymous_id, email) in enumerate(spec)
    ]


def _by_event_id(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        grouped[record["event_id"]].append(record)
    return dict(grouped)


@PROPERTY
@given(spec=steps, policy=policies, data=st.data())
def test_redelivery_changes_nothing(
    spec: list[tuple[str, str | None]], policy: Policy, data: st.DataObject
) -> None:
    stream = _stream(spec)
    redelivered = list(stream)
    for _ in range(data.draw(st.integers(0, 10)) if stream else 0):
        value = stream[data.draw(st.integers(0, len(stream) - 1))]
        first = redelivered.index(value)  # a copy arrives any time after the original
        redelivered.insert(data.draw(st.integers(first + 1, len(redelivered))), value)
    rules = RecognitionRules(policy=policy)
    once, again = Run(rules), Run(rules)
    once.feed(*stream)
    again.feed(*redelivered)
    assert again.records == once.records
    assert again.counts.duplicates == len(redelivered) - len(stream)


@PROPERTY
@given(spec=steps, policy=policies, seed=st.randoms(use_true_random=False))
def test_interleaving_of_anonymous_ids_changes_no_outcome(
    spec: list[tuple[str, str | None]], policy: Policy, seed: random.Random
) -> None:
    stream = _stream(spec)
    lanes: dict[str, list[bytes]] = defaultdict(list)
    for (anonymous_id, _), value in zip(spec, stream, strict=True):
        lanes[anonymous_id].append(value)
    interleaved: list[bytes] = []
    while any(lanes.values()):  # merge the lanes in a random order, each keeping its own
        lane = seed.choice([lane for lane in lanes.values() if lane])
        interleaved.append(lane.pop(0))
    rules = RecognitionRules(policy=policy)
    original, shuffled = Run(rules), Run(rules)
    original.feed(*stream)
    shuffled.feed(*interleaved)
    assert _by_event_id(shuffled.records) == _by_event_id(original.records)


@PROPERTY
@given(spec=steps, policy=policies, cuts=st.lists(st.integers(0, 40), max_size=8))
def test_batch_boundaries_do_not_matter(
    spec: list[tuple[str, str | None]], policy: Policy, cuts: list[int]
) -> None:
    stream = _stream(spec)
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    batches = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    rules = RecognitionRules(policy=policy)
    whole, split = Run(rules), Run(rules)
    whole.feed(*stream)
    split.feed_batches(batches)
    assert split.records == whole.records


@PROPERTY
@given(spec=steps, policy=policies)
def test_versions_of_an_event_strictly_increase(
    spec: list[tuple[str, str | None]], policy: Policy
) -> None:
    run = Run(RecognitionRules(policy=policy))
    run.feed(*_stream(spec))
    for records in _by_event_id(run.records).values():
        versions = [r["version"] for r in records]
        assert versions == list(range(1, len(versions) + 1))


@PROPERTY
@given(spec=steps)
def test_retain_leaves_every_event_with_the_first_identity_after_it_or_the_one_before(
    spec: list[tuple[str, str | None]],
) -> None:
    """A model of ``retain``: an anonymous event ends with the identity that was current when
    it arrived, or, if there was none yet, the first one that came after it."""
    run = Run()
    run.feed(*_stream(spec))
    current: dict[str, str] = {}
    expected: dict[str, str | None] = {}
    waiting: dict[str, list[str]] = defaultdict(list)
    for i, (anonymous_id, email) in enumerate(spec):
        event_id = f"e{i}"
        if email is None:
            expected[event_id] = current.get(anonymous_id)
            if anonymous_id not in current:
                waiting[anonymous_id].append(event_id)
            continue
        expected[event_id] = email
        for held in waiting.pop(anonymous_id, []):
            expected[held] = email
        current[anonymous_id] = email
    latest = run.latest()
    assert {e: r["event"]["user"].get("email") for e, r in latest.items()} == expected


@PROPERTY
@given(spec=steps)
def test_latest_gives_every_event_of_an_id_its_newest_identity(
    spec: list[tuple[str, str | None]],
) -> None:
    """A model of ``latest`` (Snowplow's): every event of an anonymous id ends with the
    newest identity as its stitched user id, or the anonymous id while it has none, and
    with its identification as it arrived."""
    run = Run(RecognitionRules(policy=Policy.LATEST))
    run.feed(*_stream(spec))
    newest = {anonymous_id: email for anonymous_id, email in spec if email is not None}
    latest = run.latest()
    assert {e: r["stitched_user_id"] for e, r in latest.items()} == {
        f"e{i}": newest.get(anonymous_id, anonymous_id) for i, (anonymous_id, _) in enumerate(spec)
    }
    assert {e: r["event"]["user"].get("email") for e, r in latest.items()} == {
        f"e{i}": email for i, (anonymous_id, email) in enumerate(spec)
    }
