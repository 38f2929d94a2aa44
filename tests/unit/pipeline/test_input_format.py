"""Snowplow's enriched TSV on the input topic, through both of the worker's paths: routed
(the repartition topic carries the JSON) and read directly when keyed by anonymous id."""

from __future__ import annotations

import orjson

from streams.core.inputs import InputFormat
from streams.core.rules import Policy, RecognitionRules
from streams.core.snowplow import enriched_event
from streams.dev import snowplow
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.route import route
from streams.pipeline.stitch import stitch
from streams.settings import load_settings
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore

TSV = InputFormat.SNOWPLOW_ENRICHED_TSV
RULES: RecognitionRules = load_settings(environ=snowplow.ENVIRONMENT).recognition


def _records(*lines: str, key: bytes | None = None) -> list[InputRecord]:
    return [InputRecord("events", 0, i, key, line.encode()) for i, line in enumerate(lines)]


def test_the_snowplow_settings_read_the_user_identifier_and_latest() -> None:
    assert RULES.policy is Policy.LATEST
    assert [p.text for p in RULES.anonymous_ids][1] == "/domain_userid"


def test_routed_lines_go_on_as_json_and_a_bad_one_is_a_dead_letter() -> None:
    line = snowplow.mobile_screen_view()
    routed = route(_records(line, "a\tb"), RULES, Counters(), input_format=TSV)
    [forward] = routed.forward
    # the client session's userId: the user identifier
    assert forward.key == snowplow.INSTALL.encode()
    assert orjson.loads(forward.value) == enriched_event(line.encode())
    [dead] = routed.dead
    assert "131 tab-separated fields; this line has 2" in dead.reason
    # what the repartition topic carries is JSON: the stitch stage reads it as such
    result = stitch(
        [InputRecord("repartition", 0, 0, forward.key, forward.value)],
        PartitionState(MemoryStore()),
        RULES,
        Counters(),
        input_format=TSV,
    )
    assert [r.status for r in result.sink][:1] == ["anonymous"]
    assert not result.dead


def test_keyed_lines_are_read_directly() -> None:
    web = snowplow.web_page_view(user_id="a@b.com")
    key = enriched_event(web.encode())["domain_userid"].encode()
    result = stitch(
        _records(web, key=key),
        PartitionState(MemoryStore()),
        RULES,
        Counters(),
        keyed=True,
        input_format=TSV,
    )
    [record] = [orjson.loads(r.value) for r in result.sink if r.status == "identified"]
    assert (record["stitched_user_id"], record["anonymous_id"]) == ("a@b.com", key.decode())
