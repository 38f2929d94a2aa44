"""What each agent does with one batch: a flow of the pipeline, emitted, checkpointed.

``Handlers`` holds what the three agents share (the settings, the outbox, the counters)
and has one method per agent. Each takes one ``Batch`` of its feed, runs it through its
flow (``streams.pipeline``) against the partitions' state, sends what that gives to its
topics, and checkpoints (``streams.worker.checkpoint``); the batch is acknowledged only
by its checkpoint, so an exception leaves it to be read again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from streams.core.control import Erasures
from streams.core.merges import Claim, Forget, MergeLimit, Release, encode
from streams.core.persons import Attach, Message, PersonLimits, key_bytes
from streams.core.persons_codec import encode as encode_person
from streams.core.record import HEADER_TRUNCATED, SinkRecord, why
from streams.pipeline.arbitrate import arbitrate
from streams.pipeline.persons import resolve
from streams.pipeline.records import DeadLetter
from streams.pipeline.route import route
from streams.pipeline.stitch import Sources, stitch_partition
from streams.settings import Settings
from streams.state.claims import ClaimState
from streams.state.partition import PartitionState
from streams.state.persons import PersonGraph
from streams.worker.checkpoint import Checkpoint
from streams.worker.feed import Batch
from streams.worker.metrics import WorkerMetrics
from streams.worker.outbox import Outbox

__all__ = ["Handlers", "TopicNames"]


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Where the handlers send and what they read beside the events."""

    sink: str
    dead_letter: str
    control: str
    quarantine: str
    repartition: str  # the route agent's output (by anonymous id)
    claims: str  # the merge limit's (streams.core.merges)
    answers: str
    persons: str  # the persons protocol's (streams.core.persons), keyed by value


class Handlers:
    """The route, stitch and arbitrate agents' work on a batch."""

    def __init__(
        self,
        settings: Settings,
        topics: TopicNames,
        outbox: Outbox,
        metrics: WorkerMetrics,
        erasures: Erasures | None = None,
    ) -> None:
        """``erasures``: those of the control topic so far (``erasures_so_far``); every
        stitch partition adds those it is given."""
        self._settings = settings
        self._erasures = Erasures() if erasures is None else erasures
        self._topics = topics
        self._outbox = outbox
        self._metrics = metrics
        self._counts = metrics.counters
        self._limit: MergeLimit = settings.merges
        self.limited = self._limit.max_anonymous_ids is not None
        self._rules = replace(
            settings.recognition, claims=self.limited, persons=settings.persons.enabled
        )
        self._input_format = settings.topics.input_format
        self._sources = Sources(
            control=topics.control,
            answers=topics.answers,
            keyed=settings.topics.input_keyed_by_anonymous_id,
            input_format=self._input_format,
            merge_limit=self.limited,
            persons=settings.persons.enabled,
        )
        names = tuple(pointer.text for pointer in settings.recognition.identification)
        self._persons: PersonLimits = replace(settings.persons, names=names)

    async def route(self, batch: Batch, checkpoint: Checkpoint) -> None:
        """Input -> repartition (keyed by anonymous id), sink (passed through), dead letters."""
        records = [record for records in batch.records.values() for record in records]
        routed = route(records, self._rules, self._counts, input_format=self._input_format)
        for forward in routed.forward:
            self._outbox.send(
                self._topics.repartition, forward.key, forward.value, timestamp=forward.timestamp
            )
        self._emit(routed.sink, routed.dead)
        await checkpoint(batch)

    async def stitch(self, batch: Batch, checkpoint: Checkpoint) -> None:
        """Per partition: the events against its state, then answers, then commands."""
        started = time.perf_counter()
        counts = self._counts
        identified = counts.identified
        done = []
        clock_ms = int(time.time() * 1000)
        for number, records in batch.by_partition().items():
            store = checkpoint.store(number)
            state = PartitionState(
                store, self._settings.retention, mappings=self._settings.identity_records
            )
            result = stitch_partition(
                records, state, self._rules, counts, self._sources, clock_ms=clock_ms,
                erasures=self._erasures,
            )  # fmt: skip
            done.append((number, store, result))
        for _, _, result in done:
            self._emit(result.sink, result.dead)
            self._claim(result.claims)
            self._send_persons(result.to_persons)
        await checkpoint(batch, [(p, store, result.changes) for p, store, result in done])
        self._metrics.batch_seconds.observe(time.perf_counter() - started)
        now_ms = time.time() * 1000
        for _, _, result in done:
            for at in result.amended_at:
                self._metrics.amend_seconds.observe(max(now_ms - at, 0.0) / 1000)
        counts.on_emitted(sum(len(result.sink) for _, _, result in done))
        if counts.identified != identified:
            self._metrics.identified_now()

    async def arbitrate(self, batch: Batch, checkpoint: Checkpoint) -> None:
        """Claims -> answers to the claims' partitions, refusals to the quarantine."""
        limit, outbox, topics = self._limit, self._outbox, self._topics
        done = []
        clock_ms = int(time.time() * 1000)
        for partition, records in batch.by_partition().items():
            store = checkpoint.store(partition)
            state = ClaimState(store, limit)
            result = arbitrate(records, state, limit, self._counts, clock_ms=clock_ms)
            done.append((partition, store, result))
        for _, _, result in done:
            for to, answer in result.answers:
                outbox.send(topics.answers, answer.anonymous_id.encode(), encode(answer), to)
            for refused in result.quarantine:
                headers = why(refused.reason, refused.claim.source)
                key = refused.claim.anonymous_id.encode()
                outbox.send(topics.quarantine, key, refused.claim.event, None, headers)
            self._emit((), result.dead)
        await checkpoint(batch, [(p, s, r.changes) for p, s, r in done])

    async def persons(self, batch: Batch, checkpoint: Checkpoint) -> None:
        """Persons records -> persons records, the persons table's rows and merges to the
        sink, refused identifications to the quarantine."""
        done = []
        kinds = self._persons.names
        for partition, records in batch.by_partition().items():
            store = checkpoint.store(partition)
            result = resolve(records, PersonGraph(store), self._persons, kinds, self._counts)
            done.append((partition, store, result))
        for _, _, result in done:
            self._send_persons(result.sends)
            self._emit(result.sink, result.dead)
            for to, answer in result.answers:  # the merge limit, counted per person
                key = answer.anonymous_id.encode()
                self._outbox.send(self._topics.answers, key, encode(answer), to)
            for refused in result.refused:
                task = refused.task
                headers = why(refused.reason, task.source)
                key = task.anonymous_id.encode() or key_bytes(refused.value)
                self._outbox.send(self._topics.quarantine, key, task.event.encode(), None, headers)
        await checkpoint(batch, [(p, s, r.changes) for p, s, r in done])

    def _send_persons(self, messages: Iterable[Attach | Message]) -> None:
        topic = self._topics.persons
        for message in messages:
            self._outbox.send(topic, key_bytes(message.to), encode_person(message))

    def _emit(self, sink: Iterable[SinkRecord], dead: Iterable[DeadLetter]) -> None:
        outbox, topics = self._outbox, self._topics
        outbox.send_many(topics.sink, [(record.key, record.value) for record in sink])
        limit = self._rules.max_event_bytes
        for letter in dead:
            key, value = letter.record.key, letter.record.value
            headers = why(letter.reason, letter.record.source)
            if limit is not None and max(len(value or b""), len(key or b"")) > limit:
                headers.append((HEADER_TRUNCATED, str(len(value or b"")).encode()))
                key, value = _cut(key, limit), _cut(value, limit)
            outbox.send(topics.dead_letter, key, value, None, headers)

    def _claim(self, messages: Iterable[Claim | Release | Forget]) -> None:
        for message in messages:
            stamp = message.timestamp if isinstance(message, Claim) else 0
            key = message.identity.encode()
            self._outbox.send(self._topics.claims, key, encode(message), timestamp=stamp)


def _cut(data: bytes | None, limit: int | None) -> bytes | None:
    return data if data is None or limit is None else data[:limit]
