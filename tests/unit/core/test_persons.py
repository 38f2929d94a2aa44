"""The persons protocol, run over simulated partitions in random orders (no I/O).

Each partition is a FIFO of messages, as a Kafka partition keyed by value is; the
simulation delivers from a random partition at each step, injects the identifications at
random moments, and may deliver a message twice (a batch processed again). Without limits
the persons must be the connected components of the values linked by identities, each
rooted at its smallest value, whatever the order; with limits, no person may ever exceed
them and every wait must end.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.rows import PersonMerge
from streams.core.persons import (
    Attach,
    Erase,
    Key,
    Linked,
    Merged,
    Message,
    Node,
    PersonLimits,
    Refused,
    person_id,
    step,
    values_of,
)
from tests.unit.connectors.test_merges import one_by_one

NO_LIMITS = PersonLimits(per_node=(None, None))
PARTITIONS = 3


@dataclass
class Partition:
    nodes: dict[Key, Node] = field(default_factory=dict)

    def node(self, key: Key) -> Node | None:
        return self.nodes.get(key)

    def put(self, key: Key, node: Node) -> None:
        self.nodes[key] = node

    def remove(self, key: Key) -> None:
        self.nodes.pop(key, None)


def home(key: Key) -> int:
    return sum(f"{key[0]}{key[1]}".encode()) % PARTITIONS


@dataclass
class Cluster:
    """Partitions, their queues, and what happened, in order."""

    limits: PersonLimits
    partitions: list[Partition] = field(
        default_factory=lambda: [Partition() for _ in range(PARTITIONS)]
    )
    queues: list[deque[Message]] = field(
        default_factory=lambda: [deque() for _ in range(PARTITIONS)]
    )
    happened: list[Linked | Merged | Refused] = field(default_factory=list)
    steps: int = 0

    def send(self, message: Message) -> None:
        self.queues[home(message.to)].append(message)

    def deliver(self, rng: random.Random, twice: float = 0.0) -> bool:
        ready = [i for i, queue in enumerate(self.queues) if queue]
        if not ready:
            return False
        number = rng.choice(ready)
        message = self.queues[number].popleft()
        if rng.random() < twice:  # handled again: at once, or after what came since
            if rng.random() < 0.5:
                self.queues[number].appendleft(message)
            else:
                self.queues[number].append(message)
        done = step(message, self.partitions[number], self.limits)
        for sent in done.messages:
            self.send(sent)
        self.happened += done.happened
        self.steps += 1
        assert self.steps < 100_000, "the protocol does not settle"
        return True

    def node(self, key: Key) -> Node:
        found = self.partitions[home(key)].node(key)
        assert found is not None, key
        return found

    def root(self, key: Key) -> Key:
        seen = set()
        while (parent := self.node(key).parent) is not None:
            assert key not in seen, "a cycle of parents"
            seen.add(key)
            key = parent
        return key

    def values(self) -> set[Key]:
        return {key for partition in self.partitions for key in partition.nodes}


def run(
    identities: list[tuple[str, tuple[object, ...]]],
    limits: PersonLimits,
    seed: int,
    twice: float = 0.0,
    erased: list[Key] | None = None,
) -> Cluster:
    """Every identity attached (at random moments), then every message delivered;
    ``erased``: values erased at random moments among them."""
    rng = random.Random(seed)
    cluster = Cluster(limits)
    waiting: list[Message] = []
    for anonymous_id, values in identities:
        keys = values_of(values)
        waiting.append(Attach(keys[0], anonymous_id, keys))
    waiting += [Erase(key) for key in erased or ()]
    rng.shuffle(waiting)
    while waiting or cluster.deliver(rng, twice):
        if waiting and rng.random() < 0.3:
            cluster.send(waiting.pop())
    return cluster


def erase(cluster: Cluster, erased: list[Key], seed: int, twice: float = 0.0) -> Cluster:
    """The values erased (in this order, at random moments), every message delivered."""
    rng = random.Random(seed)
    waiting = [Erase(key) for key in reversed(erased)]
    while waiting or cluster.deliver(rng, twice):
        if waiting and rng.random() < 0.3:
            cluster.send(waiting.pop())
    return cluster


def one_after_another(
    identities: list[tuple[str, tuple[object, ...]]], limits: PersonLimits
) -> Cluster:
    """Each identity attached once everything before it has settled."""
    rng = random.Random(0)
    cluster = Cluster(limits)
    for anonymous_id, values in identities:
        keys = values_of(values)
        cluster.send(Attach(keys[0], anonymous_id, keys))
        while cluster.deliver(rng):
            pass
    return cluster


def components(identities: list[tuple[str, tuple[object, ...]]]) -> dict[Key, Key]:
    """Reference: each value's component, as its smallest value (union-find)."""
    parent: dict[Key, Key] = {}

    def find(key: Key) -> Key:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for _, values in identities:
        keys = values_of(values)
        find(keys[0])
        for key in keys[1:]:
            a, b = find(keys[0]), find(key)
            parent[max(a, b)] = min(a, b)
    return {key: find(key) for key in list(parent)}


def interleaved(merges: list[Merged], rng: random.Random) -> list[Merged]:
    """The merges in another order that a sink topic allows: those of one loser (one
    record key, one partition) keep their order, the rest interleave at random."""
    queues: dict[Key, list[Merged]] = {}
    for merge in merges:
        queues.setdefault(merge.loser, []).append(merge)
    order: list[Merged] = []
    while queues:
        loser = rng.choice(sorted(queues))
        order.append(queues[loser].pop(0))
        if not queues[loser]:
            del queues[loser]
    return order


def warehouse_merges(merges: list[Merged]) -> dict[str, str]:
    """Each person merged away and where it went last, as the warehouses apply merges in
    the order they come (the reference ``connectors.merges`` is tested against)."""
    rows = [PersonMerge(m.loser_person, m.winner_person, 1, "") for m in merges]
    return one_by_one(rows, {}, {})[0]


USER_IDS = st.sampled_from([f"u{i}" for i in range(6)])
EMAILS = st.sampled_from([f"e{i}@x" for i in range(6)])
IDENTITY = st.one_of(
    st.tuples(USER_IDS, st.none()),
    st.tuples(st.none(), EMAILS),
    st.tuples(USER_IDS, EMAILS),
)
IDENTITIES = st.lists(IDENTITY, min_size=1, max_size=14).map(
    lambda found: [(f"a{i}", values) for i, values in enumerate(found)]
)


def _settled(cluster: Cluster) -> None:
    """Nothing waits, nothing is queued, every root holds exactly its values."""
    assert not any(cluster.queues)
    by_root: dict[Key, set[Key]] = {}
    for key in cluster.values():
        by_root.setdefault(cluster.root(key), set()).add(key)
    for root, members in by_root.items():
        node = cluster.node(root)
        assert not node.waiting
        assert not node.queue
        assert node.members == members
        assert root == min(members)


#: how many messages a waiting root keeps: the default, and bounds so small that messages
#: go back to the topic all the time
QUEUED = st.sampled_from([PersonLimits().max_queued, 1])


@given(IDENTITIES, st.integers(0, 2**32), QUEUED)
@settings(max_examples=300, deadline=None)
def test_without_limits_persons_are_the_connected_components(
    identities: list[tuple[str, tuple[object, ...]]], seed: int, queued: int
) -> None:
    cluster = run(identities, replace(NO_LIMITS, max_queued=queued), seed)
    _settled(cluster)
    expected = components(identities)
    assert cluster.values() == set(expected)
    assert {key: cluster.root(key) for key in expected} == expected
    assert not any(isinstance(h, Refused) for h in cluster.happened)


@given(IDENTITIES, st.integers(0, 2**32), st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_without_limits_any_order_and_redelivery_give_the_same_persons(
    identities: list[tuple[str, tuple[object, ...]]], one: int, other: int
) -> None:
    first = run(identities, NO_LIMITS, one)
    again = run(identities, NO_LIMITS, other, twice=0.2)
    _settled(again)
    assert {k: first.root(k) for k in first.values()} == {k: again.root(k) for k in again.values()}


@given(IDENTITIES, st.integers(0, 2**32), st.sampled_from([0.0, 0.2]), QUEUED)
@settings(max_examples=300, deadline=None)
def test_with_limits_no_person_exceeds_them_and_every_wait_ends(
    identities: list[tuple[str, tuple[object, ...]]], seed: int, twice: float, queued: int
) -> None:
    limits = PersonLimits(max_queued=queued)  # one user id, one email
    cluster = run(identities, limits, seed, twice)
    _settled(cluster)
    for key in cluster.values():
        root = cluster.root(key)
        assert limits.refusal(cluster.node(root).members) is None


@given(IDENTITIES, st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_each_anonymous_id_is_linked_to_its_anchors_person(
    identities: list[tuple[str, tuple[object, ...]]], seed: int
) -> None:
    cluster = run(identities, PersonLimits(), seed)
    merged = {h.loser: h.winner for h in cluster.happened if isinstance(h, Merged)}
    linked = {
        h.identifier: h.root
        for h in cluster.happened
        if isinstance(h, Linked) and isinstance(h.identifier, str)
    }
    for anonymous_id, values in identities:
        root = linked[anonymous_id]
        while root in merged:  # the warehouse follows merges the same way
            root = merged[root]
        assert root == cluster.root(values_of(values)[0])


def test_a_user_id_and_an_email_on_two_devices_become_one_person_on_a_third() -> None:
    identities: list[tuple[str, tuple[object, ...]]] = [
        ("device-a", ("u-7", None)),
        ("device-b", (None, "kim@example.com")),
        ("device-c", ("u-7", "kim@example.com")),
    ]
    cluster = one_after_another(identities, PersonLimits())
    assert cluster.root((1, "kim@example.com")) == (0, "u-7")
    assert any(
        isinstance(h, Merged) and h.loser == (1, "kim@example.com") for h in cluster.happened
    )


def test_a_second_user_id_is_refused() -> None:
    identities: list[tuple[str, tuple[object, ...]]] = [
        ("device-a", ("u-7", "kim@example.com")),
        ("device-b", ("u-8", "kim@example.com")),
    ]
    cluster = one_after_another(identities, PersonLimits())  # the first to arrive decides
    refused = [h for h in cluster.happened if isinstance(h, Refused)]
    assert len(refused) == 1
    assert "2 values of /user/id" in refused[0].reason
    assert cluster.root((0, "u-8")) == (0, "u-8")
    assert cluster.root((1, "kim@example.com")) == (0, "u-7")


def _some_values(identities: list[tuple[str, tuple[object, ...]]], picks: list[int]) -> list[Key]:
    values = sorted({key for _, v in identities for key in values_of(v)})
    return list(dict.fromkeys(values[i % len(values)] for i in picks))


@given(IDENTITIES, st.lists(st.integers(0, 99), max_size=5), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_an_erased_value_leaves_the_graph_and_its_person_stays_one(
    identities: list[tuple[str, tuple[object, ...]]], picks: list[int], seed: int
) -> None:
    """Erased once the persons settled: nothing of the value stays, and the rest of each
    person is one person, rooted at its smallest value left; the warehouse, following the
    merges in any order a sink topic allows, shows its root's id on every value left, no
    two persons share one, and none is an erased value's own."""
    erased = _some_values(identities, picks)
    cluster = erase(run(identities, NO_LIMITS, seed), erased, seed, twice=0.2)
    _settled(cluster)
    left = {key: root for key, root in components(identities).items() if key not in erased}
    assert cluster.values() == set(left)
    heirs: dict[Key, Key] = {}
    for key, root in left.items():
        heirs[root] = min(heirs.get(root, key), key)
    merges = [h for h in cluster.happened if isinstance(h, Merged)]
    for order in (merges, interleaved(merges, random.Random(seed))):
        shown = _shown(cluster.happened, order)
        for key, root in left.items():
            assert cluster.root(key) == heirs[root]
            assert shown[key] == cluster.node(heirs[root]).person(heirs[root])
        assert len({shown[h] for h in heirs.values()}) == len(heirs)
        assert not {shown[key] for key in left} & {person_id(key) for key in erased}


def _shown(happened: list[object], merges: list[Merged]) -> dict[Key | str, str]:
    """Each identifier's person as the warehouse shows it, the merges applied in order."""
    into = warehouse_merges(merges)
    linked = {h.identifier: h.person for h in happened if isinstance(h, Linked)}
    return {identifier: into.get(person, person) for identifier, person in linked.items()}


@given(IDENTITIES, st.lists(st.integers(0, 99), max_size=5), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_erasures_among_identifications_settle_and_leave_no_value_half_known(
    identities: list[tuple[str, tuple[object, ...]]], picks: list[int], seed: int
) -> None:
    """Erased while identifications are on their way (which may bring a value back), each
    record handled once: every wait ends, every root holds exactly the values under it,
    none over a limit."""
    _erased_among_identifications(identities, picks, seed, twice=0.0)


@pytest.mark.xfail(
    reason="a record sent twice (a batch re-sent after a crash) that reaches a value erased"
    " and identified again since is taken for one of its new life (an answer's ticket, a"
    " drop): the graph keeps no tombstone of an erased value",
    strict=False,
)
@given(IDENTITIES, st.lists(st.integers(0, 99), max_size=5), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_erasures_among_identifications_handled_twice(
    identities: list[tuple[str, tuple[object, ...]]], picks: list[int], seed: int
) -> None:
    _erased_among_identifications(identities, picks, seed, twice=0.2)


def _erased_among_identifications(
    identities: list[tuple[str, tuple[object, ...]]], picks: list[int], seed: int, twice: float
) -> None:
    limits = PersonLimits()
    cluster = run(identities, limits, seed, twice, erased=_some_values(identities, picks))
    _settled(cluster)
    for key in cluster.values():
        assert limits.refusal(cluster.node(cluster.root(key)).members) is None


def test_the_merge_limit_counts_anonymous_ids_per_person() -> None:
    """Two anonymous ids at most: device C links Kim's user id and email, whose persons
    hold A and B, and would be the person's third: it is refused, the link stands."""
    identities: list[tuple[str, tuple[object, ...]]] = [
        ("device-a", ("u-7", None)),
        ("device-b", (None, "kim@example.com")),
        ("device-c", ("u-7", "kim@example.com")),
    ]
    cluster = one_after_another(identities, PersonLimits(max_anonymous_ids=2))
    assert cluster.root((1, "kim@example.com")) == (0, "u-7")
    [refused] = [h for h in cluster.happened if isinstance(h, Refused)]
    assert (refused.task.anonymous_id, refused.device) == ("device-c", True)
    assert "3 anonymous ids within 30 days" in refused.reason
    linked = {h.identifier for h in cluster.happened if isinstance(h, Linked)}
    assert {"device-a", "device-b"} <= linked
    assert "device-c" not in linked
    assert [d[0] for d in cluster.node((0, "u-7")).devices] == ["device-a", "device-b"]


@given(IDENTITIES, st.integers(0, 2**32), st.integers(1, 3), st.sampled_from([0.0, 0.2]))
@settings(max_examples=300, deadline=None)
def test_no_person_takes_more_anonymous_ids_than_the_merge_limit(
    identities: list[tuple[str, tuple[object, ...]]], seed: int, limit: int, twice: float
) -> None:
    """Counted per person, in any order: every wait ends, no person keeps more anonymous
    ids than the limit, and every anonymous id joins its anchor's person or is refused. An
    anonymous id whose identity alone is over the limit joins without counting: the
    identity's own count (rule 10, not in this model) refuses and un-merges it."""
    limits = replace(NO_LIMITS, max_anonymous_ids=limit)
    cluster = run(identities, limits, seed, twice)
    _settled(cluster)
    by_identity: dict[Key, set[str]] = {}
    for anonymous_id, values in identities:
        by_identity.setdefault(values_of(values)[0], set()).add(anonymous_id)
    over = {a for ids in by_identity.values() if len(ids) > limit for a in ids}
    merged = {h.loser: h.winner for h in cluster.happened if isinstance(h, Merged)}
    joined: dict[Key, set[str]] = {}
    for h in cluster.happened:
        if isinstance(h, Linked) and isinstance(h.identifier, str):
            root = h.root
            while root in merged:
                root = merged[root]
            joined.setdefault(root, set()).add(h.identifier)
    refused = {h.task.anonymous_id for h in cluster.happened if isinstance(h, Refused)}
    for root, anonymous_ids in joined.items():
        assert len(anonymous_ids - over) <= limit
        assert len(cluster.node(root).devices) <= limit
    assert {a for ids in joined.values() for a in ids} | refused == {a for a, _ in identities}
