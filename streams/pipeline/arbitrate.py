"""The arbitrate flow: the merge limit's claims, one partition of the claims topic at a time.

Each identification the stitch flow applies is claimed here, keyed by its identity
(``streams.core.merges``); ``ClaimState`` grants it while the identity holds fewer than
the limit's anonymous ids in the window. Every claim is answered to the partition that
made it; a refusal also goes to the quarantine with its reason.

    Claim("u-7", "a1", partition=3, ...)  ->  answers [(3, Answer("a1", "u-7", True))]
    Release("u-7", "a1")                  ->  the identity's count forgets a1
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.core.clock import capped
from streams.core.errors import BadRecord, StateError
from streams.core.merges import Answer, Claim, MergeLimit, Release, parse_claims_record, refusal
from streams.pipeline.counts import Counters
from streams.pipeline.records import DeadLetter, InputRecord, dead_letter
from streams.state.claims import ClaimState
from streams.state.store import Change

__all__ = ["Arbitrated", "Quarantined", "arbitrate"]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An identification the merge limit refused: its event, and why."""

    claim: Claim
    reason: str


@dataclass(slots=True)
class Arbitrated:
    """What ``arbitrate`` made of a partition's claims."""

    answers: list[tuple[int, Answer]] = field(default_factory=list)  # (partition, answer)
    quarantine: list[Quarantined] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


def arbitrate(
    records: Iterable[InputRecord],
    state: ClaimState,
    limit: MergeLimit,
    counts: Counters,
    *,
    clock_ms: int,
) -> Arbitrated:
    """Claims, releases and forgets of one partition of the claims topic, in order. Time
    is the claims' own (the identifying events'), never later than ``clock_ms``."""
    done = Arbitrated()
    latest = 0
    for record in records:
        try:
            message = parse_claims_record(record.value)
            if isinstance(message, Claim):
                now = capped(message.timestamp, clock_ms)
                latest = max(latest, now)
                granted = state.claim(message, now)
                answer = Answer(message.anonymous_id, message.identity, granted)
                done.answers.append((message.partition, answer))
                if not granted:
                    done.quarantine.append(Quarantined(message, refusal(limit)))
                    counts.on_quarantined()
            elif isinstance(message, Release):
                state.release(message.identity, message.anonymous_id)
            else:
                state.forget(message.identity)
        except (BadRecord, StateError) as exc:
            done.dead.append(dead_letter(record, exc, counts))
    if latest > 0:
        state.expire(latest)
    counts.on_dropped(state.dropped)
    done.changes = state.changes()
    return done
