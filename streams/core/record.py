"""The sink record: what the stitcher emits and every connector reads (docs/warehouses.md).

One JSON object per record, keyed by event id:

    {"event_id": "event1", "anonymous_id": "1", "stitched_user_id": "a@b.com",
     "version": 2, "status": "amended", "event": {...the event, identity written in...}}

For one event id the record with the highest ``version`` is the one a warehouse keeps,
whatever order records arrive in. Two records are not events: an ``erased`` record (its
event's row goes) carries ``ERASED_VERSION``, above any version the rules give, so that
nothing emitted for the event before it, or again by a replay, wins over it; an ``erase``
record (key ``erase:<id>``) deletes every row of an anonymous id or of an identity.

An ``identity`` record (key ``identity:<anonymous id>``) is the row of the user mapping
table (Snowplow's), one per anonymous id, the latest ``version`` winning as for events:

    {"status": "identity", "anonymous_id": "1", "stitched_user_id": "a@b.com",
     "version": 1714557600000, "mapping": "identified", "identification": {"user":
     {"email": "a@b.com"}}, "first_seen": 1714557000000, "first_identified":
     1714557600000, "last_identified": 1714557600000}

``mapping`` is ``identified``, ``anonymous`` (un-merged, or refused by the merge limit:
``stitched_user_id`` is the anonymous id again) or ``erased`` (the row goes). Times are ms
since the epoch, the records'. The version is the time of the record that changed the
mapping, or one more than the last version where that is not more: it grows with every
change, and a mapping made again after an erasure outranks the erasure's.

Records that the stitcher or a connector cannot take go to a dead-letter topic as they
arrived, with two headers: ``HEADER_REASON`` (why) and ``HEADER_SOURCE``
(``topic[partition]@offset`` of the record). A record whose key or value is larger than
``stitcher.max_event_bytes`` is sent cut to that size, with a third header,
``HEADER_TRUNCATED``: the size of the value as it arrived (the whole record stays on its
topic, at its source, for the topic's retention). Refused identifications go to the
quarantine topic with the same headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "ERASED_VERSION",
    "HEADER_REASON",
    "HEADER_SOURCE",
    "HEADER_TRUNCATED",
    "Headers",
    "Scalar",
    "SinkRecord",
    "Status",
    "erase_rows",
    "erased",
    "identity_record",
    "person_merge_record",
    "person_record",
    "sink_record",
    "why",
]

#: A value an identification node may hold.
Scalar = str | int | float

HEADER_REASON = "retrostitch.reason"
HEADER_SOURCE = "retrostitch.source"
HEADER_TRUNCATED = "retrostitch.truncated"
#: a record's headers, as Kafka clients take them
Headers = list[tuple[str, str | bytes | None]]


class Status(StrEnum):
    """Why a sink record was emitted; carried in the record as ``status``."""

    PASSTHROUGH = "passthrough"  # no usable anonymous id: emitted untouched, nothing stored
    ANONYMOUS = "anonymous"  # anonymous id with no identity yet: emitted as is, held
    IDENTIFIED = "identified"  # carries identification values itself: emitted as is
    STITCHED = "stitched"  # anonymous, identity already known: emitted stitched at once
    AMENDED = "amended"  # re-emission of an earlier event with an identity written in
    UNMERGED = "unmerged"  # re-emission of an amended event as it arrived (an un-merge)
    ERASED = "erased"  # the event was erased: the warehouse deletes its row
    ERASE = "erase"  # not an event: delete every row of an anonymous id, or of an identity
    IDENTITY = "identity"  # not an event: the user mapping row of an anonymous id
    PERSON = "person"  # not an event: an identifier's person (the persons table's row)
    PERSON_MERGE = "person_merge"  # not an event: one person is now another


#: The version of an erasure marker: above any version the rules give
ERASED_VERSION = 2**62


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One record for the sink topic: key, value, and what the counters read of it."""

    key: bytes  # the event id
    value: bytes  # the JSON object above
    status: Status
    version: int


def sink_record(
    event_id: str,
    anonymous_id: str | None,
    stitched_user_id: Scalar | None,
    version: int,
    status: Status,
    event: dict[str, Any] | orjson.Fragment,
    person_key: str | None = None,
) -> SinkRecord:
    """The sink record of one event (``event``: the event as emitted, or its raw bytes).
    ``person_key`` (persons on): the id of the identifier whose person the row is."""
    document: dict[str, Any] = {
        "event_id": event_id,
        "anonymous_id": anonymous_id,
        "stitched_user_id": stitched_user_id,
        "version": version,
        "status": status.value,
        "event": event,
    }
    if person_key is not None:
        document["person_key"] = person_key
    return SinkRecord(event_id.encode(), orjson.dumps(document), status, version)


def person_record(
    identifier_id: str, kind: str, value: str, person_id: str, seen: int, version: int
) -> SinkRecord:
    """The persons table's row of one identifier (an anonymous id, or a value of an
    identification node: ``kind``): the person it belongs to, as of ``seen`` (ms)."""
    document = {
        "status": Status.PERSON.value,
        "identifier_id": identifier_id,
        "kind": kind,
        "value": value,
        "person_id": person_id,
        "seen": seen,
        "version": version,
    }
    key = f"person:{identifier_id}".encode()
    return SinkRecord(key, orjson.dumps(document), Status.PERSON, version)


def person_merge_record(person_id: str, into: str, at: int) -> SinkRecord:
    """Every row of the person ``person_id``, of any age, now belongs to ``into``."""
    document = {
        "status": Status.PERSON_MERGE.value,
        "person_id": person_id,
        "into": into,
        "version": at,
    }
    key = f"person_merge:{person_id}".encode()
    return SinkRecord(key, orjson.dumps(document), Status.PERSON_MERGE, at)


def why(reason: str, source: str) -> Headers:
    """The headers of a dead letter or a quarantined record: why, and where it came from."""
    return [(HEADER_REASON, reason.encode()), (HEADER_SOURCE, source.encode())]


def erased(event_id: str, anonymous_id: str) -> SinkRecord:
    """The sink record that tells the warehouses to delete an event's row."""
    return sink_record(event_id, anonymous_id, None, ERASED_VERSION, Status.ERASED, {})


def erase_rows(anonymous_id: str | None = None, identity: str | None = None) -> SinkRecord:
    """The sink record that tells the warehouses to delete every row of ``anonymous_id``
    (its ``anonymous_id`` column), or of ``identity`` (its ``stitched_user_id`` or an
    identification column): also rows of events the stitcher no longer remembers."""
    target = {"anonymous_id": anonymous_id} if anonymous_id is not None else {"identity": identity}
    key = f"erase:{anonymous_id if anonymous_id is not None else identity}"
    value = orjson.dumps({"status": Status.ERASE.value, **target, "version": ERASED_VERSION})
    return SinkRecord(key.encode(), value, Status.ERASE, ERASED_VERSION)


def identity_record(
    anonymous_id: str,
    stitched_user_id: Scalar,
    mapping: Status,
    identification: dict[str, Any],
    version: int,
    times: tuple[int, int | None, int | None],
    person_key: str | None = None,
) -> SinkRecord:
    """The mapping row of ``anonymous_id`` (``mapping``: IDENTIFIED, ANONYMOUS or ERASED),
    ``identification`` its values at their nodes, ``times`` (first seen, first identified,
    last identified) in ms; ``person_key`` (persons on): the anonymous id's identifier id,
    whose persons row names its person."""
    first_seen, first_identified, last_identified = times
    document: dict[str, Any] = {
        "status": Status.IDENTITY.value,
        "anonymous_id": anonymous_id,
        "stitched_user_id": stitched_user_id,
        "version": version,
        "mapping": mapping.value,
        "identification": identification,
        "first_seen": first_seen,
        "first_identified": first_identified,
        "last_identified": last_identified,
    }
    if person_key is not None:
        document["person_key"] = person_key
    value = orjson.dumps(document)
    return SinkRecord(f"identity:{anonymous_id}".encode(), value, Status.IDENTITY, version)
