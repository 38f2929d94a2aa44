"""Persons on the real broker: people on several devices, identifying differently on each,
end as one person in the persons records the worker emits, whichever partitions their
values and devices fall in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from streams.core.control import Command, Verb
from streams.core.persons import identifier_id, person_id, successor_id
from streams.dev.reader import Message
from streams.ops.topics import send_command
from tests.integration.harness import Pipeline


def _event(event_id: str, anonymous_id: str, **user: str) -> bytes:
    return orjson.dumps(
        {"eventn_ctx_event_id": event_id, "user": {"anonymous_id": anonymous_id, **user}}
    )


def _persons(messages: Sequence[Message]) -> dict[str, str]:
    """The warehouse's view: each identifier's person (its row of the highest version),
    merges followed."""
    rows: list[dict[str, Any]] = [orjson.loads(m.value or b"") for m in messages]
    newest = sorted((r for r in rows if r.get("status") == "person"), key=lambda r: r["version"])
    persons = {r["identifier_id"]: r["person_id"] for r in newest}
    merged = {r["person_id"]: r["into"] for r in rows if r.get("status") == "person_merge"}
    view = {}
    for identifier, person in persons.items():
        while person in merged:
            person = merged[person]
        view[identifier] = person
    return view


def test_three_devices_of_one_person_a_second_user_id_refused_unmerge_and_erase(
    pipeline: Pipeline,
) -> None:
    pipeline.env["USER_RECOGNITION_PERSONS"] = "true"
    sink = pipeline.reader(pipeline.settings.topics.sink)
    quarantine = pipeline.reader(pipeline.settings.topics.quarantine)
    pipeline.worker()
    pipeline.produce(
        _event("a1", "device-a"),
        _event("a2", "device-a", id="u-7"),
        _event("b1", "device-b", email="kim@example.com"),
    )
    kim = person_id((0, "u-7"))
    want = {identifier_id("device-a"): kim, identifier_id((0, "u-7")): kim}
    sink.wait_for(lambda m: want.items() <= _persons(m).items(), timeout=60)
    pipeline.produce(_event("c1", "device-c", id="u-7", email="kim@example.com"))
    everyone = {
        identifier_id(identifier): kim
        for identifier in ("device-a", "device-b", "device-c", (0, "u-7"), (1, "kim@example.com"))
    }
    sink.wait_for(lambda m: everyone.items() <= _persons(m).items(), timeout=60)
    # the first link to arrive decides: Kim has a user id, so a second one is refused
    pipeline.produce(_event("d1", "device-d", id="u-8", email="kim@example.com"))
    device_d = identifier_id("device-d")
    view = _persons(sink.wait_for(lambda m: device_d in _persons(m), timeout=60))
    assert everyone.items() <= view.items()
    assert view[device_d] == person_id((0, "u-8"))
    assert view[identifier_id((0, "u-8"))] == person_id((0, "u-8"))  # never Kim's
    refused = quarantine.wait_for(lambda m: len(m) >= 1, timeout=60)
    assert orjson.loads(refused[0].value or b"")["eventn_ctx_event_id"] == "d1"
    assert b"2 values of /user/id" in dict(refused[0].headers)["retrostitch.reason"]
    # un-merged, device A is a person of its own; the other devices stay Kim's
    send_command(pipeline.settings, Command(Verb.UNMERGE, anonymous_id="device-a"))
    device_a = identifier_id("device-a")
    view = _persons(sink.wait_for(lambda m: _persons(m)[device_a] == device_a, timeout=60))
    assert view[identifier_id("device-c")] == view[identifier_id((0, "u-7"))] == kim
    # u-7 erased: it leaves the graph, and Kim's email keeps her other devices one person,
    # under an id that is not u-7's hash
    send_command(pipeline.settings, Command(Verb.ERASE, identity="u-7"))
    heir = successor_id(kim, (1, "kim@example.com"))
    device_b = identifier_id("device-b")
    view = _persons(sink.wait_for(lambda m: _persons(m)[device_b] == heir, timeout=60))
    assert view[identifier_id((1, "kim@example.com"))] == heir


def test_the_merge_limit_counts_anonymous_ids_per_person(pipeline: Pipeline) -> None:
    """Two anonymous ids per person at most: device C, which links Kim's user id (device A's)
    and email (device B's), is her third; it is quarantined and un-merged, so its next
    event stays its own, while each identity took only two."""
    pipeline.env["USER_RECOGNITION_PERSONS"] = "true"
    pipeline.env["USER_RECOGNITION_MAX_ANONYMOUS_IDS_PER_IDENTITY"] = "2"
    sink = pipeline.reader(pipeline.settings.topics.sink)
    quarantine = pipeline.reader(pipeline.settings.topics.quarantine)
    pipeline.worker()
    pipeline.produce(
        _event("a1", "device-a", id="u-7"), _event("b1", "device-b", email="kim@example.com")
    )
    kim = person_id((0, "u-7"))
    sink.wait_for(lambda m: _persons(m).get(identifier_id("device-a")) == kim, timeout=60)
    pipeline.produce(_event("c1", "device-c", id="u-7", email="kim@example.com"))
    refused = quarantine.wait_for(lambda m: len(m) >= 1, timeout=60)
    assert orjson.loads(refused[0].value or b"")["eventn_ctx_event_id"] == "c1"
    assert b"counted per person: 2" in dict(refused[0].headers)["retrostitch.reason"]
    device_c = identifier_id("device-c")
    view = _persons(sink.wait_for(lambda m: _persons(m).get(device_c) == device_c, timeout=60))
    assert view[identifier_id("device-b")] == kim  # the link itself stands
    pipeline.produce(_event("c2", "device-c"))

    def c2(messages: Sequence[Message]) -> list[dict[str, Any]]:
        rows = [orjson.loads(m.value or b"") for m in messages]
        return [r for r in rows if r.get("event_id") == "c2"]

    [row] = c2(sink.wait_for(lambda m: len(c2(m)) == 1, timeout=60))
    assert row["stitched_user_id"] == "device-c"
