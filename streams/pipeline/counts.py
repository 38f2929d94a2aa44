"""What the flows count: one counter per field, a named hook per thing that happens.

A flow calls a hook of ``Counters`` at each thing that happens to a record, as Faust
calls its sensors. Each field is one counter on /metrics (``retrostitch_<field>_total``)
and, where it has a section, a line of ``retrostitch status`` (``streams.ops.counters``).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.record import Status
from streams.core.rules import Outcome
from streams.ops.counters import counter
from streams.state.retention import Dropped

__all__ = ["Counters"]


@dataclass(slots=True)
class Counters:
    """What the agents did, since the worker started."""

    received: int = counter("events")  # events read (input, or repartitioned input)
    emitted: int = counter("events")  # sink records produced
    passthrough: int = counter("events")  # events with no usable anonymous id, or bots'
    bots: int = counter("events")  # events the bot filter passed through
    dead_lettered: int = counter("events")  # records sent to a dead-letter topic
    duplicates: int = counter("events")  # events whose id was seen: nothing emitted
    identified: int = counter("recognition")  # events that carried an identification
    amended: int = counter("recognition")  # earlier events emitted again, identity written in
    #: identified events emitted again with a newer identity as their stitched user id
    #: (policy latest; counted in amended too)
    restitched: int = counter("recognition")
    stitched: int = counter("recognition")  # anonymous events of a known identity
    anonymous: int = counter("recognition")  # anonymous events held for an identity
    conflicts: int = counter("recognition")  # a different identity on an identified id
    mappings: int = counter("recognition")  # user mapping rows emitted (identity records)
    #: persons merged into others (persons on): one set-based re-label in each warehouse
    person_merges: int = counter("recognition")
    held: int = counter("bounds")  # events newly held
    expired: int = counter("bounds")  # held events past the TTL
    capped: int = counter("bounds")  # held events over an anonymous id's cap
    forgotten: int = counter("bounds")  # seen markers past the TTL
    identities_expired: int = counter("bounds")  # identities past the identity TTL
    claims_expired: int = counter()  # merge-limit grants that left with the window
    state_set_aside: int = counter("bounds")  # local partitions ahead or unreadable: restored
    claimed: int = counter("merge limit")  # identifications sent to the merge limit
    quarantined: int = counter("merge limit")  # identifications the limit refused
    refused_anonymous_ids: int = counter("merge limit")  # anonymous ids un-merged by it
    refused_events: int = counter()  # their events emitted again as they arrived
    erased_anonymous_ids: int = counter("commands")
    erased_events: int = counter("commands")
    #: events an erasure covers that came again (a replay, a late copy): never emitted
    erased_on_arrival: int = counter("commands")
    unmerged_anonymous_ids: int = counter("commands")
    unmerged_events: int = counter()

    def on_received(self, records: int = 1) -> None:
        self.received += records

    def on_passthrough(self, bot: bool) -> None:
        """An event routed to the sink untouched (no usable anonymous id, or a bot's)."""
        self.passthrough += 1
        self.bots += bot

    def on_bot(self) -> None:
        self.bots += 1

    def on_outcome(self, outcome: Outcome) -> None:
        """What the rules decided for one event."""
        for record in outcome.records:
            status = record.status
            if status is Status.STITCHED:
                self.stitched += 1
            elif status is Status.ANONYMOUS:
                self.anonymous += 1
            elif status is Status.IDENTIFIED:
                self.identified += 1
            elif status is Status.AMENDED:
                self.amended += 1
            elif status is Status.PASSTHROUGH:
                self.passthrough += 1
        self.restitched += outcome.restitched
        self.held += outcome.hold is not None
        self.duplicates += outcome.duplicate
        self.conflicts += outcome.conflict

    def on_mapped(self) -> None:
        """An anonymous id's user mapping row emitted (its identity changed, or went)."""
        self.mappings += 1

    def on_person_merge(self) -> None:
        self.person_merges += 1

    def on_dead_letter(self) -> None:
        self.dead_lettered += 1

    def on_dropped(self, dropped: Dropped) -> None:
        """What a batch's bounds let go (``streams.state.retention``)."""
        self.expired += dropped.expired
        self.capped += dropped.capped
        self.forgotten += dropped.forgotten
        self.identities_expired += dropped.identities_expired
        self.claims_expired += dropped.claims_expired

    def on_state_set_aside(self) -> None:
        """A table partition's local state was set aside, to be restored (recovery)."""
        self.state_set_aside += 1

    def on_claimed(self) -> None:
        self.claimed += 1

    def on_quarantined(self) -> None:
        self.quarantined += 1

    def on_erased(self, events: int) -> None:
        """An anonymous id erased, with the ``events`` state held of it (0: none held)."""
        self.erased_events += events
        self.erased_anonymous_ids += bool(events)

    def on_erased_on_arrival(self) -> None:
        self.erased_on_arrival += 1

    def on_unmerged(self, events: int, *, refused: bool) -> None:
        """An anonymous id un-merged: by command, or by the merge limit's refusal."""
        if refused:
            self.refused_anonymous_ids += 1
            self.refused_events += events
        else:
            self.unmerged_anonymous_ids += 1
            self.unmerged_events += events

    def on_emitted(self, records: int) -> None:
        self.emitted += records
