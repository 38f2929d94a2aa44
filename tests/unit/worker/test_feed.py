"""How a feed hands fetched records to its agent (``streams.worker.transport.Feed``; no Kafka)."""

from __future__ import annotations

import asyncio

import pytest

from streams.pipeline.records import InputRecord
from streams.worker.feed import Batch, Feed

A, B = ("events", 0), ("events", 1)


def _records(tp: tuple[str, int], first: int, count: int) -> list[InputRecord]:
    return [
        InputRecord(tp[0], tp[1], offset, b"k", b"{}") for offset in range(first, first + count)
    ]


def _offsets(records: dict[tuple[str, int], list[InputRecord]]) -> dict[tuple[str, int], list[int]]:
    return {tp: [record.offset for record in found] for tp, found in records.items()}


def test_what_is_queued_is_taken_as_one_batch_in_order_up_to_max_events() -> None:
    async def run() -> list[dict[tuple[str, int], list[int]]]:
        feed = Feed(["events"], max_events=5)
        await feed.put({A: _records(A, 0, 2), B: _records(B, 10, 1)})
        await feed.put({A: _records(A, 2, 2)})
        await feed.put({B: _records(B, 11, 3)})  # 3 + 4 > 5: the next batch
        taken = []
        for _ in range(2):
            batch = await feed.take()
            taken.append(_offsets(batch.records))
            batch.release()
        assert not feed.queued
        return taken

    assert asyncio.run(run()) == [{A: [0, 1, 2, 3], B: [10]}, {B: [11, 12, 13]}]


def test_a_fetch_larger_than_max_events_comes_in_pieces_each_partition_in_order() -> None:
    async def run() -> list[dict[tuple[str, int], list[int]]]:
        feed = Feed(["events"], max_events=3)
        await feed.put({A: _records(A, 0, 4), B: _records(B, 0, 2)})
        taken = []
        async for batch in feed.batches():
            taken.append(_offsets(batch.records))
            batch.release()
            if not feed.queued:
                break
        return taken

    assert asyncio.run(run()) == [{A: [0, 1, 2]}, {A: [3], B: [0, 1]}]


def test_done_tells_the_last_offset_of_each_partition_and_release_makes_the_feed_idle() -> None:
    async def run() -> tuple[list[tuple[tuple[str, int], int]], bool, bool]:
        feed = Feed(["events"], max_events=100)
        told: list[tuple[tuple[str, int], int]] = []
        feed.processed = lambda tp, offset: told.append((tp, offset))
        await feed.put({A: _records(A, 0, 3), B: _records(B, 7, 2)})
        batch = await feed.take()
        idle_while_held = feed.idle
        batch.done()
        batch.release()
        batch.release()  # once is enough
        await asyncio.wait_for(feed.wait_idle(), 1)
        return told, idle_while_held, feed.idle

    told, idle_while_held, idle_after = asyncio.run(run())
    assert told == [(A, 2), (B, 8)]
    assert not idle_while_held
    assert idle_after


def test_a_batch_left_without_done_tells_nothing_and_clear_drops_what_is_queued() -> None:
    async def run() -> tuple[list[tuple[tuple[str, int], int]], bool]:
        feed = Feed(["events"], max_events=100)
        told: list[tuple[tuple[str, int], int]] = []
        feed.processed = lambda tp, offset: told.append((tp, offset))
        await feed.put({A: _records(A, 0, 3)})
        async for batch in feed.batches():
            batch.release()  # the agent failed before its checkpoint
            break
        await feed.put({A: _records(A, 3, 3)})
        feed.clear()  # a rebalance: the new owner reads these again
        return told, not feed.queued

    assert asyncio.run(run()) == ([], True)


def test_serve_releases_each_batch_whether_its_handler_returns_or_raises() -> None:
    async def run() -> tuple[list[list[int]], bool]:
        feed = Feed(["events"], max_events=2)
        await feed.put({A: _records(A, 0, 4)})
        handled: list[list[int]] = []

        async def handle(batch: Batch) -> None:
            handled.append(_offsets(batch.records)[A])
            if len(handled) == 2:
                raise RuntimeError("the agent fails on its second batch")

        with pytest.raises(RuntimeError):
            await feed.serve(handle)
        return handled, feed.idle

    assert asyncio.run(run()) == ([[0, 1], [2, 3]], True)
