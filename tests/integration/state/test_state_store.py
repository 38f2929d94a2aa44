"""One contract for every ``KeyValueStore``: real RocksDB on disk, and the in-memory one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.core.rules import Held, Identity, Outcome
from streams.state.partition import PartitionState
from streams.state.rocks import RocksStore
from streams.state.store import KeyValueStore, MemoryStore


@pytest.fixture(params=["rocksdb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    rocks = RocksStore.open(tmp_path / "db")
    yield rocks
    rocks.close()


def test_missing_key_reads_none(store: KeyValueStore) -> None:
    assert store.get(b"nope") is None


def test_a_batch_of_puts_and_deletes(store: KeyValueStore) -> None:
    store.write([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    store.write([(b"b", None), (b"a", b"one"), (b"missing", None)])
    assert (store.get(b"a"), store.get(b"b"), store.get(b"c")) == (b"one", None, b"3")


def test_the_last_change_to_a_key_in_a_batch_wins(store: KeyValueStore) -> None:
    store.write([(b"k", b"1"), (b"k", b"2")])
    assert store.get(b"k") == b"2"
    store.write([(b"k", b"3"), (b"k", None)])
    assert store.get(b"k") is None


def test_scan_returns_exactly_the_prefix_in_key_order(store: KeyValueStore) -> None:
    keys = [b"a", b"a\x00", b"a\x00\x01", b"a\xff", b"ab", b"b", b"\x00", b"\xff\xff"]
    store.write([(key, key + b"!") for key in reversed(keys)])
    assert [k for k, _ in store.scan(b"a")] == [b"a", b"a\x00", b"a\x00\x01", b"ab", b"a\xff"]
    assert list(store.scan(b"a\x00")) == [(b"a\x00", b"a\x00!"), (b"a\x00\x01", b"a\x00\x01!")]
    assert list(store.scan(b"c")) == []
    assert [k for k, _ in store.scan(b"")] == sorted(keys)
    assert [k for k, _ in store.scan(b"a", b"a\x00\x00")] == [b"a\x00\x01", b"ab", b"a\xff"]
    assert [k for k, _ in store.scan(b"a", b"")] == [k for k, _ in store.scan(b"a")]
    assert list(store.scan(b"a", b"b")) == []


def test_empty_values_are_kept(store: KeyValueStore) -> None:
    store.write([(b"seen", b"")])
    assert store.get(b"seen") == b""
    assert list(store.scan(b"seen")) == [(b"seen", b"")]


def test_rocksdb_keeps_data_across_reopen(tmp_path: Path) -> None:
    first = RocksStore.open(tmp_path / "db")
    first.write([(b"k", b"v")])
    first.close()
    again = RocksStore.open(tmp_path / "db")
    assert again.get(b"k") == b"v"
    again.close()


# -- the state layout over each store ------------------------------------------------------


def _held(seq: int, event_id: str) -> Held:
    return Held(seq, event_id, b'{"e": "%s"}' % event_id.encode(), 1)


def test_held_events_merge_stored_and_pending_in_arrival_order(store: KeyValueStore) -> None:
    state = PartitionState(store)
    state.apply("A", "e2", Outcome(records=(), hold=_held(20, "e2"), mark_seen=True), 20, 0)
    state.apply("A", "e9", Outcome(records=(), hold=_held(300, "e9"), mark_seen=True), 300, 0)
    store.write(state.changes())
    state = PartitionState(store)
    state.apply("A", "e1", Outcome(records=(), hold=_held(5, "e1"), mark_seen=True), 5, 0)
    assert [h.event_id for h in state.held("A")] == ["e1", "e2", "e9"]
    assert state.held("A")[0] == _held(5, "e1")
    assert state.seen("A", "e9")
    assert not state.seen("B", "e9")


def test_ids_with_separator_bytes_do_not_collide(store: KeyValueStore) -> None:
    state = PartitionState(store)
    state.apply(
        "a", "e1", Outcome(records=(), hold=_held(1, "e1"), identity=Identity(("u",))), 1, 0
    )
    state.apply("a\x00b", "e2", Outcome(records=(), hold=_held(2, "e2"), mark_seen=True), 2, 0)
    store.write(state.changes())
    state = PartitionState(store)
    assert [h.event_id for h in state.held("a")] == ["e1"]
    assert [h.event_id for h in state.held("a\x00b")] == ["e2"]
    assert state.identity("a") == Identity(("u",))
    assert state.identity("a\x00b") is None
    assert not state.seen("a", "\x00be2")
