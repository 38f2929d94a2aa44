"""The persons flow: one partition of the persons topic against its person graph.

Each record is a message of the persons protocol (``streams.core.persons``), addressed to
a value of this partition. ``resolve`` handles them in order and says what follows:
messages for the persons topic (each keyed by the value it is addressed to), the rows of
the persons table and the merges for the sink topic, and the identifications refused
for the quarantine.

    attach u-7 (a1; u-7, kim@x)  ->  persons: find kim@x (origin u-7)
                                     sink: person u-7 -> person(u-7)
    join u-7 (loser kim@x)       ->  persons: answer kim@x accepted, resume u-7
                                     sink: person_merge person(kim@x) -> person(u-7)
    resume u-7 (a1)              ->  sink: person a1 -> person(u-7)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.core.errors import BadRecord, StateError
from streams.core.merges import Answer
from streams.core.persons import (
    ANONYMOUS_KIND,
    Linked,
    Merged,
    Message,
    PersonLimits,
    Refused,
    identifier_id,
    step,
)
from streams.core.persons_codec import parse_message
from streams.core.record import SinkRecord, person_merge_record, person_record
from streams.pipeline.counts import Counters
from streams.pipeline.records import DeadLetter, InputRecord, dead_letter
from streams.state.persons import PersonGraph
from streams.state.store import Change

__all__ = ["Resolved", "resolve"]


@dataclass(slots=True)
class Resolved:
    """What ``resolve`` made of a partition's persons records."""

    sends: list[Message] = field(default_factory=list)  # to the persons topic
    sink: list[SinkRecord] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)  # to the quarantine
    #: (stitch partition, refusal): anonymous ids the merge limit, counted per person,
    #: keeps out, to be un-merged there as the merge limit's own refusals are
    answers: list[tuple[int, Answer]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


def resolve(
    records: Iterable[InputRecord],
    graph: PersonGraph,
    limits: PersonLimits,
    kinds: tuple[str, ...],
    counts: Counters,
) -> Resolved:
    """The persons records of one partition, in order. ``kinds`` names each
    identification node (its JSON pointer) for the persons table."""
    done = Resolved()
    for record in records:
        try:
            handled = step(parse_message(record.value), graph, limits)
        except (BadRecord, StateError) as exc:
            done.dead.append(dead_letter(record, exc, counts))
            continue
        done.sends += handled.messages
        for happened in handled.happened:
            if isinstance(happened, Refused):
                done.refused.append(happened)
                counts.on_quarantined()
                task = happened.task
                if happened.device and task.partition >= 0:
                    refusal = Answer(task.anonymous_id, task.anchor[1], granted=False)
                    done.answers.append((task.partition, refusal))
            else:
                done.sink.append(_row(happened, kinds))
                if isinstance(happened, Merged):
                    counts.on_person_merge()
    done.changes = graph.changes()
    return done


def _row(happened: Linked | Merged, kinds: tuple[str, ...]) -> SinkRecord:
    if isinstance(happened, Merged):
        return person_merge_record(happened.loser_person, happened.winner_person, happened.at)
    identifier = happened.identifier
    if isinstance(identifier, str):
        kind, value = ANONYMOUS_KIND, identifier
    else:
        kind, value = kinds[identifier[0]], identifier[1]
    return person_record(
        identifier_id(identifier),
        kind,
        value,
        happened.person,
        happened.at,
        max(happened.at, 1),
    )
