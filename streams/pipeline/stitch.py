"""The stitch flow: one partition's events, answers and commands against its state.

``stitch_partition`` takes what a batch holds of one partition number, in this order:
the events (``stitch``: the input keyed by anonymous id, or the repartition topic), then
the merge limit's answers (``answers``), then erase and un-merge commands (``control``).
Each later part sees the pending changes of the earlier ones; ``Stitched.changes`` hands
all of them over in the order a crash may safely cut (``PartitionState.changes``). The
caller emits ``sink`` and ``dead`` records and ``claims``, then checkpoints the changes.

    a1: page (anonymous)          ->  sink: page, status anonymous (held)
    a1: login, user id u-7        ->  sink: login identified; page amended to u-7, version 2;
                                      identity:a1 -> u-7 (with ``mappings`` on)
    a1: page                      ->  sink: page stitched to u-7
    control: erase a1             ->  sink: a deletion of each event state knew of a1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streams.core.clock import capped
from streams.core.control import Erasures, Verb, parse_command
from streams.core.errors import BadRecord, StateError
from streams.core.inputs import InputFormat, as_json
from streams.core.merges import Claim, Forget, Release, parse_answer
from streams.core.persons import ANONYMOUS_KIND, Attach, Erase, Message, identifier_id, values_of
from streams.core.record import (
    SinkRecord,
    Status,
    erase_rows,
    erased,
    identity_record,
    person_record,
)
from streams.core.rules import (
    Held,
    Identity,
    Memory,
    Outcome,
    Parsed,
    Policy,
    RecognitionRules,
    claim_key,
    decide,
    parse,
    stitchable,
    unmerged,
)
from streams.pipeline.counts import Counters
from streams.pipeline.records import DeadLetter, InputRecord, by_topic, dead_letter, value_of
from streams.state.partition import Mapping, PartitionState
from streams.state.store import Change

__all__ = ["Sources", "Stitched", "answers", "control", "stitch", "stitch_partition"]


@dataclass(slots=True)
class Stitched:
    """What a part of a partition's records made (``stitch``, ``answers``, ``control``),
    or all of them (``stitch_partition``)."""

    sink: list[SinkRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    #: to the claims topic, keyed by identity (the merge limit; ``streams.core.merges``)
    claims: list[Claim | Release | Forget] = field(default_factory=list)
    #: the times (ms, capped at the clock) of the events whose identification amended
    #: earlier ones: the worker's amend latency starts there
    amended_at: list[int] = field(default_factory=list)
    #: to the persons topic, keyed by each one's value (persons on; streams.core.persons):
    #: identities to attach, values erased
    to_persons: list[Message] = field(default_factory=list)

    def then(self, more: Stitched) -> None:
        """Add what a later part of the partition's records made; its changes include
        this part's (one ``PartitionState`` buffers them all)."""
        self.sink += more.sink
        self.dead += more.dead
        self.claims += more.claims
        self.amended_at += more.amended_at
        self.to_persons += more.to_persons
        self.changes = more.changes


@dataclass(frozen=True, slots=True)
class Sources:
    """How a partition's records are told apart and read."""

    control: str  # the commands' topic
    answers: str  # the merge limit's answers' topic
    #: the events come straight from an input keyed by anonymous id (else: from the
    #: repartition topic, as JSON)
    keyed: bool = False
    input_format: InputFormat = InputFormat.JSON  # of a keyed input's values
    merge_limit: bool = False  # the merge limit is on: claims and releases go out
    persons: bool = False  # persons are resolved: each new identity is attached


def stitch_partition(
    records: Sequence[InputRecord],
    state: PartitionState,
    rules: RecognitionRules,
    counts: Counters,
    sources: Sources,
    *,
    clock_ms: int | None = None,
    erasures: Erasures | None = None,
) -> Stitched:
    """One partition's records of a batch: its erasures, then the events, then answers,
    then the other commands. An erasure goes first so that what it covers (events up to
    its time) is never emitted on the way, whatever the batch holds; ``erasures``: every
    erasure the worker knows, which the batch's join."""
    parts = by_topic(records, sources.control, sources.answers)
    erasures = Erasures() if erasures is None else erasures
    erasing, commands = _erasures_first(parts[sources.control])
    merge_limit = sources.merge_limit
    done = control(erasing, state, rules, counts, merge_limit=merge_limit, erasures=erasures)
    events = stitch(
        parts[""],
        state,
        rules,
        counts,
        keyed=sources.keyed,
        clock_ms=clock_ms,
        input_format=sources.input_format,
        persons=sources.persons,
        erasures=erasures,
    )
    done.then(events)
    done.then(answers(parts[sources.answers], state, rules, counts))
    done.then(control(commands, state, rules, counts, merge_limit=merge_limit))
    return done


def _erasures_first(
    records: Sequence[InputRecord],
) -> tuple[list[InputRecord], list[InputRecord]]:
    """The control records that are erasures, and the others (a malformed one among the
    others: ``control`` says why)."""
    erasing: list[InputRecord] = []
    others: list[InputRecord] = []
    for record in records:
        try:
            verb = parse_command(record.value).verb
        except BadRecord:
            verb = None
        (erasing if verb is Verb.ERASE else others).append(record)
    return erasing, others


def stitch(
    records: Iterable[InputRecord],
    state: PartitionState,
    rules: RecognitionRules,
    counts: Counters,
    *,
    keyed: bool = False,
    clock_ms: int | None = None,
    input_format: InputFormat = InputFormat.JSON,
    persons: bool = False,
    erasures: Erasures | None = None,
) -> Stitched:
    """``keyed``: the records come straight from an input keyed by anonymous id (values in
    ``input_format``), so an event with an anonymous id must carry it as its key (else its
    partition may not be the one that holds that id's state): one that does not is a dead
    letter. Otherwise they come from the repartition topic, as JSON.

    Time is the records' own (so that a replay expires what the live run expired), never
    later than ``clock_ms`` (the caller's clock: a producer's clock far in the future must
    not expire everything); a record without a timestamp counts as ``clock_ms``. After the
    records, the state expires what the latest of their times makes old (``Retention``).
    With ``persons``, each new identity of an anonymous id is attached to its person
    (``Stitched.to_persons``). An event that ``erasures`` covers is never emitted
    (``streams.core.control``); one covered by an identification value erases its
    anonymous id, as the erasure by identity would have.
    """
    stitched = Stitched()
    latest = 0
    fmt = input_format if keyed else InputFormat.JSON  # the repartition topic carries JSON
    erasures = Erasures() if erasures is None else erasures
    for record in records:
        if keyed:  # else ``route`` counted it
            counts.on_received()
        timestamp = capped(record.timestamp, clock_ms)
        latest = max(latest, timestamp)
        try:
            parsed = parse(as_json(value_of(record), fmt), rules)
            if erasures and _erased(parsed, timestamp, erasures, state, rules, stitched, counts):
                continue
            outcome, anonymous_id = _stitch_one(
                record, parsed, timestamp, state, rules, keyed, counts
            )
        except (BadRecord, StateError) as exc:
            stitched.dead.append(dead_letter(record, exc, counts))
            continue
        stitched.sink.extend(outcome.records)
        counts.on_outcome(outcome)
        if outcome.identity is not None and anonymous_id is not None:
            mapping = state.mapped(anonymous_id, True, timestamp)
            if mapping is not None:
                stitched.sink.append(_identified(anonymous_id, outcome.identity, mapping, rules))
                counts.on_mapped()
            if persons:  # the mapping's version orders a device's persons rows
                at = timestamp if mapping is None else mapping.version
                stitched.to_persons.append(_attach(record, anonymous_id, outcome, at, rules))
        if outcome.rehold and any(r.status is Status.AMENDED for r in outcome.records):
            stitched.amended_at.append(timestamp)
        if outcome.claim is not None and anonymous_id is not None:
            stitched.claims.append(_claim(record, anonymous_id, outcome.claim, timestamp))
            counts.on_claimed()
    if latest > 0:
        state.expire(latest)
    counts.on_dropped(state.dropped)
    stitched.changes = state.changes()
    return stitched


def _erased(
    parsed: Parsed,
    timestamp: int,
    erasures: Erasures,
    state: PartitionState,
    rules: RecognitionRules,
    stitched: Stitched,
    counts: Counters,
) -> bool:
    """Whether an erasure covers the event (its anonymous id, or one of its identification
    values, up to the erasure's time): then it is never emitted. One covered by a value
    erases its anonymous id too, as an erasure by identity would have (the events of its
    anonymous id emitted before are deleted)."""
    values = () if parsed.identity is None else parsed.identity.values
    covered = erasures.covers(parsed.anonymous_id, values, timestamp)
    if covered is None:
        return False
    by_value, until = covered
    counts.on_erased_on_arrival()
    if by_value and parsed.anonymous_id is not None:
        stitched.then(
            _erase_anonymous_id(
                parsed.anonymous_id,
                state,
                erasures,
                rules,
                counts,
                at=until,
                merge_limit=rules.claims,
                rows=True,
            )
        )
    return True


def _erase_anonymous_id(
    anonymous_id: str,
    state: PartitionState,
    erasures: Erasures,
    rules: RecognitionRules,
    counts: Counters,
    *,
    at: int,
    merge_limit: bool,
    rows: bool,
) -> Stitched:
    """Forget ``anonymous_id`` and delete the rows of the events state held of it (with
    ``rows``, its rows of any age too); its events up to ``at`` stay erased whenever they
    come again."""
    done = Stitched()
    done.claims += _released(anonymous_id, state, merge_limit)
    mapping = state.unmapped(anonymous_id, max(at, 0))
    if mapping is not None:
        done.sink.append(_unidentified(anonymous_id, mapping, Status.ERASED, rules))
        counts.on_mapped()
    event_ids = state.forget(anonymous_id)
    done.sink += [erased(event_id, anonymous_id) for event_id in event_ids]
    if rows:
        done.sink.append(erase_rows(anonymous_id))
    erasures.erase_anonymous_id(anonymous_id, at)
    counts.on_erased(len(event_ids))
    return done


def control(
    records: Iterable[InputRecord],
    state: PartitionState,
    rules: RecognitionRules,
    counts: Counters,
    *,
    merge_limit: bool = False,
    erasures: Erasures | None = None,
) -> Stitched:
    """Commands of the control topic (``streams.core.control``) against one partition's state:
    an erasure forgets the anonymous ids and emits a deletion for each of their events; an
    un-merge forgets the identity and emits the events it had amended as they arrived.
    With the ``merge_limit`` on, the identities' counts learn of both (``Stitched.claims``).
    ``erasures`` learns of each erasure (what it covers stays erased)."""
    done = Stitched()
    erasures = Erasures() if erasures is None else erasures
    for record in records:
        try:
            command = parse_command(record.value)
            if command.verb is Verb.ERASE:
                targets = (
                    [command.anonymous_id]
                    if command.anonymous_id is not None
                    else state.identified_as(str(command.identity))
                )
                if command.identity is not None and merge_limit:
                    done.claims.append(Forget(command.identity))
                if record.partition == 0:  # one copy of the command: the warehouses' rows
                    done.sink.append(erase_rows(command.anonymous_id, command.identity))
                    done.to_persons += _erased_values(command.identity, rules, record.timestamp)
                until = max(record.timestamp, 0)  # what the erasure covers, now and later
                erasures.add(command, until)
                for anonymous_id in targets:
                    done.then(
                        _erase_anonymous_id(
                            anonymous_id,
                            state,
                            erasures,
                            rules,
                            counts,
                            at=until,
                            merge_limit=merge_limit,
                            rows=command.identity is not None,
                        )
                    )
            elif command.anonymous_id is not None:
                done.claims += _released(command.anonymous_id, state, merge_limit)
                done.sink += _unmerge(
                    command.anonymous_id, state, rules, counts, at=record.timestamp
                )
        except (BadRecord, StateError) as exc:
            done.dead.append(dead_letter(record, exc, counts))
    done.changes = state.changes()
    return done


def _erased_values(identity: object, rules: RecognitionRules, at: int) -> list[Message]:
    """An erased identity leaves the person graph, as a value of every identification
    node (persons on; one that the graph does not hold changes nothing)."""
    if identity is None or not rules.persons:
        return []
    value = str(identity)
    return [Erase((node, value), max(at, 0)) for node in range(len(rules.identification))]


def answers(
    records: Iterable[InputRecord],
    state: PartitionState,
    rules: RecognitionRules,
    counts: Counters,
) -> Stitched:
    """The merge limit's answers against one partition's state. A confirmation ends the
    keeping of the anonymous id's stitched events; a refusal of the identity it still has
    un-merges it (its amended and stitched events go out again as they arrived)."""
    done = Stitched()
    for record in records:
        try:
            answer = parse_answer(record.value)
            identity = state.identity(answer.anonymous_id)
            state.confirmed(answer.anonymous_id, answer.identity)
            if answer.granted or identity is None or claim_key(identity) != answer.identity:
                continue  # confirmed, or about an identity the anonymous id no longer has
            done.sink += _unmerge(
                answer.anonymous_id, state, rules, counts, at=record.timestamp, refused=True
            )
        except (BadRecord, StateError) as exc:
            done.dead.append(dead_letter(record, exc, counts))
    done.changes = state.changes()
    return done


def _stitch_one(
    record: InputRecord,
    parsed: Parsed,
    timestamp: int,
    state: PartitionState,
    rules: RecognitionRules,
    keyed: bool,
    counts: Counters,
) -> tuple[Outcome, str | None]:
    """The outcome of one event (``parsed`` from ``record``; applied to ``state``), and
    its anonymous id."""
    anonymous_id = parsed.anonymous_id
    if not stitchable(parsed, rules) or anonymous_id is None:
        if parsed.bot:
            counts.on_bot()
        return decide(parsed, Memory(), record.offset, rules), None
    if keyed and record.key != anonymous_id.encode():
        raise BadRecord(
            f"key {_shown(record.key)} is not the event's anonymous id {anonymous_id[:80]!r}, "
            "and topics.input_keyed_by_anonymous_id says the input is keyed by it"
        )
    outcome = decide(
        parsed, state.memory(parsed, rules, before=record.offset), record.offset, rules
    )
    state.apply(anonymous_id, parsed.event_id, outcome, record.offset, timestamp)
    return outcome, anonymous_id


def _attach(
    record: InputRecord,
    anonymous_id: str,
    outcome: Outcome,
    at: int,
    rules: RecognitionRules,
) -> Attach:
    """The persons message of an anonymous id's new identity: its values are one person's,
    and the anonymous id joins it, except a shared device's new identity under ``retain``
    (its earlier events stay with the first person: only the values are linked). ``at``:
    the version of the device's persons row, growing with each of its identities."""
    assert outcome.identity is not None
    values = values_of(outcome.identity.values)
    linked = "" if outcome.conflict and rules.policy is Policy.RETAIN else anonymous_id
    event = value_of(record).decode(errors="replace")
    return Attach(values[0], linked, values, at, record.source, event, record.partition)


def _released(anonymous_id: str, state: PartitionState, merge_limit: bool) -> list[Release]:
    identity = state.identity(anonymous_id) if merge_limit else None
    return [] if identity is None else [Release(claim_key(identity), anonymous_id)]


def _unmerge(
    anonymous_id: str,
    state: PartitionState,
    rules: RecognitionRules,
    counts: Counters,
    *,
    at: int,
    refused: bool = False,
) -> list[SinkRecord]:
    """Forget the anonymous id's identity; emit its held events again as they arrived, and
    its mapping row as anonymous (``refused``: the merge limit's refusal, else a command;
    ``at``: the time of the record that asked, ms). With persons on, the anonymous id's
    persons row names a person of its own again, one version above the row that joined it
    to the identity's person (both are versioned as the mapping row is), so the rows that
    follow the device (the re-emitted ones, and all of them under ``latest``) leave that
    person whichever of the two rows a warehouse gets first."""
    if state.identity(anonymous_id) is None:
        return []  # nothing merged (or not in this partition)
    state.forget_identity(anonymous_id)
    records = []
    for held in state.held(anonymous_id):
        records.append(unmerged(held, anonymous_id, rules))
        state.rehold(anonymous_id, Held(held.seq, held.event_id, held.raw, held.version + 1))
    counts.on_unmerged(len(records), refused=refused)
    mapping = state.mapped(anonymous_id, False, max(at, 0))
    if mapping is not None:
        records.append(_unidentified(anonymous_id, mapping, Status.ANONYMOUS, rules))
        counts.on_mapped()
    if rules.persons:
        version = max(at, 1) if mapping is None else mapping.version
        own = identifier_id(anonymous_id)
        records.append(person_record(own, ANONYMOUS_KIND, anonymous_id, own, at, version))
    return records


def _identified(
    anonymous_id: str, identity: Identity, mapping: Mapping, rules: RecognitionRules
) -> SinkRecord:
    """The mapping row of an anonymous id bound to ``identity``: its values at their nodes."""
    values: dict[str, object] = {}
    for pointer, value in zip(rules.identification, identity.values, strict=True):
        if value is not None:
            pointer.set(values, value)
    return identity_record(
        anonymous_id,
        identity.user_id,
        Status.IDENTIFIED,
        values,
        mapping.version,
        _times(mapping),
        _person_key(anonymous_id, rules),
    )


def _unidentified(
    anonymous_id: str, mapping: Mapping, status: Status, rules: RecognitionRules
) -> SinkRecord:
    """The mapping row of an anonymous id with no identity (ANONYMOUS) or erased (ERASED)."""
    version, times = mapping.version, _times(mapping)
    person_key = _person_key(anonymous_id, rules)
    return identity_record(anonymous_id, anonymous_id, status, {}, version, times, person_key)


def _person_key(anonymous_id: str, rules: RecognitionRules) -> str | None:
    """A mapping row's person (persons on): its anonymous id's persons row names it."""
    return identifier_id(anonymous_id) if rules.persons else None


def _times(mapping: Mapping) -> tuple[int, int | None, int | None]:
    return mapping.first_seen, mapping.first_identified, mapping.last_identified


def _claim(record: InputRecord, anonymous_id: str, identity: Identity, timestamp: int) -> Claim:
    return Claim(
        claim_key(identity),
        anonymous_id,
        record.partition,
        record.offset,
        record.source,
        value_of(record),
        timestamp,
    )


def _shown(key: bytes | None) -> str:
    return "(none)" if key is None else repr(key[:80])
