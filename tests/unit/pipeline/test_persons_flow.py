"""The persons flow over stored person graphs: records through the codec, batches through
``resolve``, and crashes that land any prefix of a batch's changes before the batch is
processed again. The persons must still be the connected components of the reference."""

from __future__ import annotations

import random
from collections import deque

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.persons import (
    Attach,
    Erase,
    Key,
    Message,
    PersonLimits,
    identifier_id,
    person_id,
    values_of,
)
from streams.core.persons_codec import encode
from streams.pipeline.counts import Counters
from streams.pipeline.persons import resolve
from streams.pipeline.records import InputRecord
from streams.state.persons import PersonGraph
from streams.state.store import MemoryStore
from tests.unit.core.test_persons import IDENTITIES, NO_LIMITS, PARTITIONS, components, home

KINDS = ("/user/id", "/user/email")
Identities = list[tuple[str, tuple[object, ...]]]


def _run(
    identities: Identities,
    limits: PersonLimits,
    seed: int,
    crashes: float,
    erased: list[Key] | None = None,
    stores: list[MemoryStore] | None = None,
) -> dict:
    """Every identity attached, every record handled in batches; then, once that settled,
    the ``erased`` values erased likewise. Returns the warehouse's view: each identifier's
    person, merges followed."""
    rng = random.Random(seed)
    stores = [MemoryStore() for _ in range(PARTITIONS)] if stores is None else stores
    queues: list[deque[Message]] = [deque() for _ in range(PARTITIONS)]
    offsets = [0] * PARTITIONS
    persons: dict[str, str] = {}  # identifier id -> person id
    merged: dict[str, str] = {}
    for anonymous_id, values in identities:
        keys = values_of(values)
        queues[home(keys[0])].append(Attach(keys[0], anonymous_id, keys))
    counts = Counters()
    batches = 0
    while any(queues) or erased:
        if not any(queues):
            for key in erased or ():
                queues[home(key)].append(Erase(key, 1))
            erased = None
            continue
        batches += 1
        assert batches < 20_000, "the persons do not settle"
        number = rng.choice([i for i, queue in enumerate(queues) if queue])
        batch = [
            queues[number].popleft() for _ in range(min(rng.randint(1, 4), len(queues[number])))
        ]
        records = [
            InputRecord("persons", number, offsets[number] + i, None, encode(message))
            for i, message in enumerate(batch)
        ]
        offsets[number] += len(batch)
        crash = rng.random() < crashes  # the batch is processed again after a crash
        for attempt in range(2 if crash else 1):
            done = resolve(records, PersonGraph(stores[number]), limits, KINDS, counts)
            assert not done.dead
            for message in done.sends:  # sent before the state is written
                queues[home(message.to)].append(message)
            for record in done.sink:
                row = orjson.loads(record.value)
                if row["status"] == "person":
                    persons[row["identifier_id"]] = row["person_id"]
                else:
                    merged[row["person_id"]] = row["into"]
            changes = done.changes
            if crash and attempt == 0:  # what landed before the crash: any prefix
                changes = changes[: rng.randrange(len(changes) + 1)]
            stores[number].write(changes)
    return {identifier: _follow(person, merged) for identifier, person in persons.items()}


def _follow(person: str, merged: dict[str, str]) -> str:
    seen = set()
    while person in merged and person not in seen:
        seen.add(person)
        person = merged[person]
    return person


@given(IDENTITIES, st.integers(0, 2**32), st.sampled_from([0.0, 0.3]))
@settings(max_examples=150, deadline=None)
def test_the_warehouse_view_is_the_connected_components(
    identities: Identities, seed: int, crashes: float
) -> None:
    view = _run(identities, NO_LIMITS, seed, crashes)
    reference = components(identities)
    for key, root in reference.items():
        assert view[identifier_id(key)] == person_id(root)
    for anonymous_id, values in identities:
        assert view[identifier_id(anonymous_id)] == person_id(reference[values_of(values)[0]])


@given(IDENTITIES, st.integers(0, 2**32))
@settings(max_examples=100, deadline=None)
def test_with_limits_every_person_holds_one_value_of_each_node(
    identities: Identities, seed: int
) -> None:
    view = _run(identities, PersonLimits(), seed, crashes=0.3)
    by_person: dict[str, list[Key]] = {}
    for key in components(identities):
        by_person.setdefault(view[identifier_id(key)], []).append(key)
    for keys in by_person.values():
        nodes = [node for node, _ in keys]
        assert len(nodes) == len(set(nodes)), keys


@given(
    IDENTITIES,
    st.lists(st.integers(0, 99), max_size=4),
    st.integers(0, 2**32),
    st.sampled_from([0.0, 0.3]),
)
@settings(max_examples=150, deadline=None)
def test_erased_values_leave_every_store_and_the_persons_stay_whole(
    identities: Identities, picks: list[int], seed: int, crashes: float
) -> None:
    """Values erased once the persons settled, through crashes that land any prefix of a
    batch's changes: no store keeps a byte of them, the values left of one component
    share one person and two components none, and no identifier shows an erased value's
    own person id."""
    values = sorted(components(identities))
    erased = list(dict.fromkeys(values[i % len(values)] for i in picks))
    stores = [MemoryStore() for _ in range(PARTITIONS)]
    view = _run(identities, NO_LIMITS, seed, crashes, erased=erased, stores=stores)
    for store in stores:
        for key, value in store.scan(b""):
            for _, erased_value in erased:
                assert erased_value.encode() not in key + value
    left = {key: root for key, root in components(identities).items() if key not in erased}
    persons: dict[Key, set[str]] = {}
    for key, root in left.items():
        persons.setdefault(root, set()).add(view[identifier_id(key)])
    assert all(len(ids) == 1 for ids in persons.values())
    assert len(set().union(*persons.values())) == len(persons)
    assert not set().union(*persons.values()) & {person_id(key) for key in erased}


def test_an_anonymous_id_over_the_merge_limit_per_person_is_refused_to_its_partition() -> None:
    """The merge limit counted per person: the third device of a person with a limit of
    two, which links Kim's user id (device 0's) and email (device 1's), is quarantined, and
    its stitch partition is told to un-merge it."""
    limits = PersonLimits(max_anonymous_ids=2)
    store = MemoryStore()
    answers = []
    identities = [((0, "u-7"),), ((1, "kim@x"),), ((0, "u-7"), (1, "kim@x"))]
    queue: deque[Message] = deque(
        Attach(values[0], f"device-{n}", values, 1_000 * n, f"events[{n}]@9", "{}", n)
        for n, values in enumerate(identities)
    )
    offset = 0
    while queue:
        record = InputRecord("persons", 0, offset, None, encode(queue.popleft()))
        offset += 1
        done = resolve([record], PersonGraph(store), limits, KINDS, Counters())
        store.write(done.changes)
        queue.extend(done.sends)
        answers += done.answers
    [(partition, answer)] = answers
    assert (partition, answer.anonymous_id, answer.identity) == (2, "device-2", "u-7")
    assert not answer.granted
