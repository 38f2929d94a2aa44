"""Whatever bytes arrive, the pipeline gives sink records or dead letters with a reason,
and never raises: a worker is never stopped by its input."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.rules import RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.route import route
from streams.pipeline.stitch import stitch
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore
from tests.badinput import oracle, stream

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON: Any = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
USER = st.fixed_dictionaries({}, optional={"anonymous_id": JSON, "id": JSON, "email": JSON})
EVENTS = st.fixed_dictionaries(
    {}, optional={"eventn_ctx_event_id": JSON, "user": USER | JSON, "user_agent": JSON}
).map(orjson.dumps)
VALUES = st.lists(st.one_of(st.binary(max_size=200), EVENTS, st.none()), max_size=25)


def _records(values: list[bytes | None]) -> list[InputRecord]:
    return [InputRecord("in", 0, n, None, value) for n, value in enumerate(values)]


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_any_input_is_emitted_or_dead_lettered_with_a_reason(values: list[bytes | None]) -> None:
    counts = Counters()
    done = stitch(_records(values), PartitionState(MemoryStore()), RecognitionRules(), counts)
    assert all(letter.reason for letter in done.dead)
    assert counts.dead_lettered == len(done.dead) <= len(values)
    # the route agent: each record exactly one of dead letter, forwarded, passed through
    routed = route(_records(values), RecognitionRules(), Counters())
    assert len(routed.dead) + len(routed.forward) + len(routed.sink) == len(values)


def test_every_kind_of_malformed_record_is_a_dead_letter_or_lands() -> None:
    records = stream(seed=7, bad=2_000, good=300)
    latest, dead = oracle(records, RecognitionRules())
    assert {f"good-{n}" for n in range(300)} <= latest.keys()
    assert len(dead) > 1_000
    huge = [value for value in dead if len(value) > 2_000_000]
    assert len(huge) == 3  # multi-megabyte events: dead letters, not a stopped worker
