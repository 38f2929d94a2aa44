"""The route flow: records of the input topic, in any partitioning, to where they go.

A bad record becomes a dead letter; an event without a usable anonymous id (or a bot's)
goes to the sink at once, as it arrived; every other event is forwarded, keyed by its
anonymous id, to the repartition topic, where the stitch flow of its partition reads it.

    {"user": {"anonymous_id": "a1"}, ...}  ->  Forward(key=b"a1", value=<the same bytes>)
    {"user": {}, ...}                      ->  a passthrough sink record
    b"not json"                            ->  DeadLetter(reason="... not valid JSON ...")
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.core.errors import BadRecord
from streams.core.inputs import InputFormat, as_json
from streams.core.record import SinkRecord
from streams.core.rules import Memory, RecognitionRules, decide, parse, stitchable
from streams.pipeline.counts import Counters
from streams.pipeline.records import DeadLetter, InputRecord, dead_letter, value_of

__all__ = ["Forward", "Routed", "route"]


@dataclass(frozen=True, slots=True)
class Forward:
    """An event for the repartition topic, keyed by its anonymous id."""

    key: bytes  # the anonymous id
    value: bytes  # the event, byte for byte as it arrived
    timestamp: int  # the input record's (ms), kept: expiry goes by it


@dataclass(slots=True)
class Routed:
    """What ``route`` made of a batch."""

    sink: list[SinkRecord] = field(default_factory=list)
    forward: list[Forward] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def route(
    records: Iterable[InputRecord],
    rules: RecognitionRules,
    counts: Counters,
    *,
    input_format: InputFormat = InputFormat.JSON,
) -> Routed:
    """Each record of the input topic: dead letter, passed through, or forwarded (as the
    JSON event its value is, whatever ``input_format``)."""
    routed = Routed()
    for record in records:
        counts.on_received()
        try:
            parsed = parse(as_json(value_of(record), input_format), rules)
        except BadRecord as exc:
            routed.dead.append(dead_letter(record, exc, counts))
            continue
        if stitchable(parsed, rules) and parsed.anonymous_id is not None:
            routed.forward.append(
                Forward(parsed.anonymous_id.encode(), parsed.raw, max(record.timestamp, 0))
            )
        else:
            routed.sink.extend(decide(parsed, Memory(), record.offset, rules).records)
            counts.on_passthrough(parsed.bot)
    return routed
