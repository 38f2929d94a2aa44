"""PostHog's person-merge ingestion scenarios, rewritten as ours: events of several devices
through the stitch flow and the persons protocol (in memory, ``expected_persons``), and the
person each event's latest row shows in the warehouse."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from streams.core.persons import PersonLimits, identifier_id, person_id, successor_id
from streams.core.pointer import Pointer
from streams.core.rules import Policy, RecognitionRules
from streams.dev.local import expected_persons

NODES = (Pointer.parse("/user/id"), Pointer.parse("/user/email"), Pointer.parse("/user/phone"))
RULES = RecognitionRules(identification=NODES)
LIMITS = PersonLimits(per_node=(1, 1, 1), names=("/user/id", "/user/email", "/user/phone"))


def _event(event_id: str, device: str, **ids: str) -> bytes:
    user: dict[str, Any] = {"anonymous_id": device, **ids}
    return orjson.dumps({"eventn_ctx_event_id": event_id, "user": user})


def _persons(*lines: bytes, limits: PersonLimits = LIMITS) -> dict[str, str]:
    return expected_persons(lines, RULES, limits)


def test_a_login_keeps_one_person() -> None:
    persons = _persons(
        _event("e1", "a1"),
        _event("e2", "a1", id="u-1"),
        _event("e3", "a1"),
        _event("e4", "a2"),
    )
    assert persons["e1"] == persons["e2"] == persons["e3"] == person_id((0, "u-1"))
    assert persons["e4"] != persons["e1"]


def test_a_chained_merge_gives_one_person() -> None:
    """1 <- 2 <- 3: a phone joins an email's person, which then joins a user id's."""
    persons = _persons(
        _event("e1", "a1", id="u-1"),
        _event("e2", "a2", email="m@x"),
        _event("e3", "a3", phone="+100"),
        _event("e4", "a4", email="m@x", phone="+100"),
        _event("e5", "a5", id="u-1", email="m@x"),
    )
    assert set(persons.values()) == {person_id((0, "u-1"))}


def test_a_complex_merge_of_two_persons_of_two_values_gives_one_person() -> None:
    """1-2 and 3-4, then 2-3: one person (emails may be two here)."""
    persons = _persons(
        _event("e1", "a1", id="u-1", email="m1@x"),
        _event("e2", "a2", email="m2@x", phone="+100"),
        _event("e3", "a3", email="m1@x", phone="+100"),
        _event("e4", "a4", phone="+100"),
        limits=PersonLimits(per_node=(1, 5, 1), names=LIMITS.names),
    )
    assert set(persons.values()) == {person_id((0, "u-1"))}


def test_a_junk_id_links_nobody() -> None:
    """Two devices that identify with a value meaning "nobody" stay two persons."""
    persons = _persons(
        _event("e1", "a1", id="undefined", email="m1@x"),
        _event("e2", "a2", id="undefined", email="m2@x"),
        _event("e3", "a3", id="null"),
        _event("e4", "a4", id="null"),
    )
    assert persons["e1"] == person_id((1, "m1@x"))
    assert persons["e2"] == person_id((1, "m2@x"))
    assert len({persons["e1"], persons["e2"], persons["e3"], persons["e4"]}) == 4


def test_a_second_user_id_is_refused_and_each_keeps_its_own_person() -> None:
    persons = _persons(
        _event("e1", "a1", id="u-1", email="m@x"),
        _event("e2", "a2", id="u-2"),
        _event("e3", "a2", id="u-2", email="m@x"),
        _event("e4", "a2"),
    )
    assert persons["e1"] == person_id((0, "u-1"))
    assert persons["e2"] == persons["e3"] == persons["e4"] == person_id((0, "u-2"))


@pytest.mark.parametrize("policy", list(Policy))
def test_an_unmerged_device_is_a_person_of_its_own_again(policy: Policy) -> None:
    """Two devices of u-1; un-merging one gives the rows it emits again (its amended ones;
    under ``latest`` all of them) a person of its own, as their stitched user id; the other
    device's rows stay with u-1. Under ``retain`` a row stitched after the login keeps u-1 in
    both, as un-merge leaves it."""
    lines = (
        _event("e1", "a1"),
        _event("e2", "a1", id="u-1"),
        _event("e3", "a2", id="u-1"),
        _event("e4", "a1"),
    )
    rules = replace(RULES, policy=policy)
    before = expected_persons(lines, rules, LIMITS)
    assert set(before.values()) == {person_id((0, "u-1"))}
    unmerge = orjson.dumps({"unmerge": {"anonymous_id": "a1"}})
    after = expected_persons(lines, rules, LIMITS, commands=[unmerge])
    own, kept = identifier_id("a1"), person_id((0, "u-1"))
    assert after["e1"] == own
    assert after["e4"] == (kept if policy is Policy.RETAIN else own)
    assert after["e3"] == kept


def test_an_erased_user_id_leaves_its_person_under_a_new_id() -> None:
    """Kim: u-7 on one device, her email on another, both on a third. Erasing u-7 deletes
    the rows it stitched (the connectors' erase record) and takes it out of the graph: the
    email's rows stay one person, under an id not derived from u-7."""
    lines = (
        _event("e1", "a1", id="u-7"),
        _event("e2", "a2", email="kim@example.com"),
        _event("e3", "a3", id="u-7", email="kim@example.com"),
        _event("e4", "a2"),
    )
    before = expected_persons(lines, RULES, LIMITS)
    assert set(before.values()) == {person_id((0, "u-7"))}
    erase = orjson.dumps({"erase": {"identity": "u-7"}})
    after = expected_persons(lines, RULES, LIMITS, commands=[erase])
    heir = successor_id(person_id((0, "u-7")), (1, "kim@example.com"))
    assert after["e2"] == after["e4"] == heir
