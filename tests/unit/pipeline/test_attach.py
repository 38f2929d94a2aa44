"""With persons on, each new identity of an anonymous id is attached to its person; a
shared device's new identity under ``retain`` links its values but not the device."""

from __future__ import annotations

import orjson
import pytest

from streams.core.persons import Attach, identifier_id
from streams.core.record import Status
from streams.core.rules import Policy, RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import stitch
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.unit.stitching import event


def _attaches(policy: Policy, *values: bytes) -> list[Attach]:
    records = [InputRecord("t", 0, i, None, v, 1_000 + i) for i, v in enumerate(values)]
    rules = RecognitionRules(policy=policy)
    done = stitch(records, PartitionState(MemoryStore()), rules, Counters(), persons=True)
    return done.to_persons


@pytest.mark.parametrize("policy", list(Policy))
def test_an_identity_and_its_completion_attach_the_device(policy: Policy) -> None:
    attaches = _attaches(
        policy, event("e1"), event("e2", user_id="u-7"), event("e3", email="kim@x")
    )
    assert [(a.anonymous_id, a.values) for a in attaches] == [
        ("1", ((0, "u-7"),)),
        ("1", ((0, "u-7"), (1, "kim@x"))),
    ]
    assert attaches[0].to == (0, "u-7")
    assert attaches[0].source == "t[0]@1"
    assert '"e2"' in attaches[0].event


@pytest.mark.parametrize(("policy", "device"), [(Policy.RETAIN, ""), (Policy.LATEST, "1")])
def test_a_shared_devices_new_identity_links_the_device_under_latest_only(
    policy: Policy, device: str
) -> None:
    attaches = _attaches(policy, event("e1", user_id="u-7"), event("e2", user_id="u-8"))
    assert [(a.anonymous_id, a.values) for a in attaches] == [
        ("1", ((0, "u-7"),)),
        (device, ((0, "u-8"),)),
    ]


def test_without_persons_nothing_is_attached() -> None:
    records = [InputRecord("t", 0, 0, None, event("e1", user_id="u-7"))]
    done = stitch(records, PartitionState(MemoryStore()), RecognitionRules(), Counters())
    assert done.to_persons == []


def _person_keys(policy: Policy, *values: bytes) -> list[tuple[str, str, str | None]]:
    records = [InputRecord("t", 0, i, None, v, 1_000 + i) for i, v in enumerate(values)]
    rules = RecognitionRules(policy=policy, persons=True)
    done = stitch(records, PartitionState(MemoryStore()), rules, Counters(), persons=True)
    rows = [orjson.loads(r.value) for r in done.sink if r.status is not Status.IDENTITY]
    return [(row["event_id"], row["status"], row.get("person_key")) for row in rows]


def test_under_retain_a_row_is_the_person_of_the_identity_it_was_given() -> None:
    device, u7, u8 = identifier_id("1"), identifier_id((0, "u-7")), identifier_id((0, "u-8"))
    assert _person_keys(
        Policy.RETAIN,
        event("e1"),
        event("e2", user_id="u-7"),
        event("e3"),
        event("e4", user_id="u-8"),
        event("e5"),
    ) == [
        ("e1", "anonymous", device),
        ("e2", "identified", u7),
        ("e1", "amended", u7),
        ("e3", "stitched", u7),
        ("e4", "identified", u8),
        ("e5", "stitched", u8),
    ]


def test_under_latest_every_row_is_the_person_of_its_device() -> None:
    device = identifier_id("1")
    keys = _person_keys(Policy.LATEST, event("e1"), event("e2", user_id="u-7"))
    assert {key for _, _, key in keys} == {device}


def test_without_persons_no_row_names_a_person() -> None:
    records = [InputRecord("t", 0, 0, None, event("e1"))]
    done = stitch(records, PartitionState(MemoryStore()), RecognitionRules(), Counters())
    assert b"person_key" not in done.sink[0].value
