"""The checkpoint of a batch: in which order an agent's output, its state changes and its
input offsets reach Kafka and RocksDB, so that a crash anywhere loses nothing and
processing a batch again changes nothing.

    1. emit the batch's records (sink, dead letters, claims, answers, quarantine) and
       wait for the broker's acks;
    2. send the state changes to the table's changelog, and wait for the acks;
    3. write the changes and the changelog offset they reach to each partition's RocksDB,
       in one write per partition;
    4. acknowledge the batch's input offsets: Faust's next commit commits them.

A crash before 3 leaves state as it was: the batch is read again and emits the very same
records (versions are deterministic). A crash after 3 re-reads events already marked as
seen: they emit nothing. A crash within 2 may land any prefix of a partition's changes in
the changelog: ``PartitionState.changes()`` orders them so that every prefix is safe.
A Faust table write needs a current event, which a batch does not have; so the agents
write the table's RocksDB and changelog themselves, in the format Faust restores from
(raw bytes keys and values, the changelog offset under Faust's key).

``Pipeline`` overlaps the waits of one batch's checkpoint with the processing of the next:
batch N+1 is processed while N's checkpoint waits for the broker, over a view of state
with N's changes laid over RocksDB (``streams.store.Overlay``), but nothing of N+1 is
emitted before N's checkpoint has ended. What reaches Kafka and RocksDB, and in which
order, is what one batch after the other gives; only the CPU's idle time is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from streams.outbox import Outbox
from streams.store import Change, KeyValueStore, Overlay, RocksStore
from streams.transport import Batch, offset_change, partition_db

__all__ = ["Checkpoint", "PartitionChanges", "Pipeline"]

#: one partition's state changes in a batch, and the store of that partition
PartitionChanges = tuple[int, KeyValueStore, list[Change]]


class Checkpoint:
    """Steps 1 to 4 for one agent; ``table`` is the Faust table whose state the agent
    keeps (None: an agent without state, for which 1 and 4 are all)."""

    def __init__(self, outbox: Outbox, table: Any = None) -> None:
        self._outbox = outbox
        self._table = table

    async def __call__(self, batch: Batch, changed: Sequence[PartitionChanges] = ()) -> None:
        outbox = self._outbox
        await outbox.flush()  # 1: state never runs ahead of what was emitted
        if self._table is not None and any(changes for _, _, changes in changed):
            changelog = self._table.changelog_topic.get_topic_name()
            for partition, _, changes in changed:  # 2: so any worker can restore it
                if changes:
                    outbox.send_many(changelog, changes, partition, track=True)
            await outbox.flush()
            for partition, store, changes in changed:  # 3
                if changes:
                    offset = outbox.acked[changelog, partition]
                    store.write([*changes, offset_change(self._table, offset)])
        batch.done()  # 4


class Pipeline:
    """One agent's checkpoints, one batch after the other, each running while the agent
    processes the next batch:

        async for batch in feed.batches():
            stores = {p: pipeline.store(p) for p in partitions}   # N-1's changes laid over
            ... process the batch against them (``await pipeline.turn()`` now and then) ...
            await pipeline.ready()            # N-1's checkpoint has ended (or raised)
            ... send the batch's records ...
            pipeline.start(batch, changed)    # N's checkpoint; N is released when it ends

    ``table`` is the Faust table whose state the agent keeps (None: no state).
    """

    def __init__(self, outbox: Outbox, table: Any = None) -> None:
        self._checkpoint = Checkpoint(outbox, table)
        self._table = table
        self._running: asyncio.Future[None] | None = None
        self._in_flight: dict[int, list[Change]] = {}  # the running checkpoint's changes

    def store(self, partition: int) -> KeyValueStore:
        """The partition's state: its RocksDB, with the changes of the batch still being
        checkpointed laid over it."""
        store = RocksStore(partition_db(self._table, partition))
        changes = self._in_flight.get(partition)
        if changes and self._running is not None and not self._running.done():
            return Overlay(store, changes)
        return store

    async def turn(self) -> None:
        """Give the running checkpoint a turn (between partitions of a long batch)."""
        await asyncio.sleep(0)

    async def ready(self) -> None:
        """Wait for the running checkpoint to end; raise what it raised. A checkpoint once
        started runs to its end even if the agent is cancelled meanwhile."""
        if self._running is not None:
            running, self._running = self._running, None
            await asyncio.shield(running)

    def start(
        self,
        batch: Batch,
        changed: Sequence[PartitionChanges] = (),
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """Checkpoint ``batch`` in the background (after ``ready``), then call ``on_end``;
        release the batch at the end, checkpointed or not."""
        if self._running is not None:
            raise RuntimeError("a checkpoint started before the previous one ended")
        self._in_flight = {partition: changes for partition, _, changes in changed}
        self._running = asyncio.ensure_future(self._run(batch, changed, on_end))

    async def _run(
        self,
        batch: Batch,
        changed: Sequence[PartitionChanges],
        on_end: Callable[[], None] | None,
    ) -> None:
        try:
            await self._checkpoint(batch, changed)
            if on_end is not None:
                on_end()
        finally:
            batch.release()
