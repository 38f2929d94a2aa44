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

A restore reads a changelog partition up to its end offset. For a broker that answers
ListOffsets(latest) with the start of a partition's last batch + 1 (the local one does;
``kafka.inexact_end_offsets``), step 2 sends each partition's last change on its own,
after the others are acknowledged: the last batch is then one record long, and the end
offset it gives is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.state.rocks import RocksStore
from streams.state.store import Change, KeyValueStore
from streams.worker.feed import Batch
from streams.worker.outbox import Outbox
from streams.worker.transport import offset_change, partition_db

__all__ = ["Checkpoint", "PartitionChanges"]

#: one partition's state changes in a batch, and the store of that partition
PartitionChanges = tuple[int, KeyValueStore, list[Change]]


class Checkpoint:
    """Steps 1 to 4 for one agent; ``table`` is the Faust table whose state the agent
    keeps (None: an agent without state, for which 1 and 4 are all)."""

    def __init__(self, outbox: Outbox, table: Any = None, last_alone: bool = False) -> None:
        self._outbox = outbox
        self._table = table
        self._last_alone = last_alone  # each partition's last change in a batch of its own

    def store(self, partition: int) -> RocksStore:
        """The state of one partition of the table: the RocksDB that Faust keeps for it."""
        return RocksStore(partition_db(self._table, partition))

    async def __call__(self, batch: Batch, changed: Sequence[PartitionChanges] = ()) -> None:
        outbox = self._outbox
        await outbox.flush()  # 1: state never runs ahead of what was emitted
        if self._table is not None and any(changes for _, _, changes in changed):
            changelog = self._table.changelog_topic.get_topic_name()
            alone = self._last_alone
            # 2: so any worker can restore it. Only each partition's last change is tracked:
            # a partition's records land in the order sent, so its offset is the one that
            # step 3 needs (a delivery report per record would cost a Python call each)
            for partition, _, changes in changed:
                if changes:
                    if len(changes) > 1:
                        outbox.send_many(changelog, changes[:-1], partition)
                    if not alone:
                        outbox.send_many(changelog, changes[-1:], partition, track=True)
            await outbox.flush()
            if alone:
                for partition, _, changes in changed:
                    if changes:
                        outbox.send_many(changelog, changes[-1:], partition, track=True)
                await outbox.flush()
            for partition, store, changes in changed:  # 3
                if changes:
                    offset = outbox.acked[changelog, partition]
                    store.write([*changes, offset_change(self._table, offset)])
        batch.done()  # 4
