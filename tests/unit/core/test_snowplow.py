"""Snowplow enriched TSV lines as the analytics SDKs' JSON object, and the reason for each
kind of line that is not one."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.errors import BadRecord
from streams.core.snowplow import (
    CONTEXTS_SCHEMA,
    FIELDS,
    UNSTRUCT_EVENT_SCHEMA,
    enriched_event,
    enriched_json,
)
from streams.dev.snowplow import (
    CLIENT_SESSION,
    FieldValue,
    context,
    enriched_line,
    mobile_screen_view,
    web_page_view,
)

LINK_CLICK = "iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1"
THING = "iglu:com.acme/thing/jsonschema/1-0-0"


def _event(**fields: FieldValue) -> dict[str, Any]:
    return enriched_event(enriched_line(**fields).encode())


def _reason(line: str | bytes) -> str:
    with pytest.raises(BadRecord) as caught:
        enriched_event(line.encode() if isinstance(line, str) else line)
    return caught.value.reason


# -- the field list --------------------------------------------------------------------


def test_the_fields_are_the_131_of_the_published_order() -> None:
    assert len(FIELDS) == len(set(FIELDS)) == 131
    assert FIELDS[:7] == (
        "app_id", "platform", "etl_tstamp", "collector_tstamp", "dvce_created_tstamp",
        "event", "event_id",
    )  # fmt: skip
    assert (FIELDS.index("user_id"), FIELDS.index("domain_userid")) == (12, 15)
    assert (FIELDS.index("contexts"), FIELDS.index("unstruct_event")) == (52, 58)
    assert (FIELDS.index("derived_contexts"), FIELDS[-1]) == (122, "true_tstamp")


# -- good lines ------------------------------------------------------------------------


def test_a_web_page_view_has_the_cookie_id_typed_fields_and_both_contexts() -> None:
    event = enriched_event(web_page_view(domain_userid="d1", event_id="e1").encode())
    assert (event["event_id"], event["platform"], event["event"]) == ("e1", "web", "page_view")
    assert event["domain_userid"] == "d1"
    assert "user_id" not in event
    assert event["collector_tstamp"] == "2024-05-01T12:00:00.123Z"
    assert (event["domain_sessionidx"], event["page_urlport"], event["br_cookies"]) == (
        1, 443, True,
    )  # fmt: skip
    assert event["contexts_com_snowplowanalytics_snowplow_web_page_1"] == [
        {"id": "a86e4d2f-5b3c-4f0a-9e61-0f5b2f9c7d13"}
    ]
    assert event["contexts_org_w3_performance_timing_1"] == [
        {"navigationStart": 1714564799000, "loadEventEnd": 1714564799850}
    ]
    assert "contexts" not in event
    assert event["geo_location"] == "52.52,13.405"


def test_an_identified_web_page_view_carries_the_user_id() -> None:
    event = enriched_event(web_page_view(user_id="a@b.com", domain_userid="d1").encode())
    assert (event["user_id"], event["domain_userid"]) == ("a@b.com", "d1")


def test_a_mobile_screen_view_has_the_client_session_and_the_screen_view() -> None:
    line = mobile_screen_view(mobile_user_id="u1", session_id="s2", session_index=2)
    event = enriched_event(line.encode())
    assert (event["platform"], event["event"]) == ("mob", "unstruct")
    assert "domain_userid" not in event
    assert event["contexts_com_snowplowanalytics_snowplow_client_session_1"] == [
        {
            "userId": "u1",
            "sessionId": "s2",
            "sessionIndex": 2,
            "previousSessionId": None,
            "storageMechanism": "SQLITE",
        }
    ]
    assert event["unstruct_event_com_snowplowanalytics_mobile_screen_view_1"] == {
        "name": "home",
        "id": "5c2a7e0b-9f1d-4c3e-8a6b-1d2e3f4a5b6c",
    }
    assert "unstruct_event" not in event


def test_an_unstruct_event_is_its_data_object_at_its_schemas_key() -> None:
    event = _event(
        event="unstruct",
        unstruct_event=context(LINK_CLICK, {"targetUrl": "https://shop.example/"}),
    )
    assert event == {
        "event": "unstruct",
        "unstruct_event_com_snowplowanalytics_snowplow_link_click_1": {
            "targetUrl": "https://shop.example/"
        },
    }


def test_every_kind_of_value_is_typed_and_empty_fields_are_left_out() -> None:
    event = _event(
        app_id="shop",
        txn_id="-42",
        doc_width="+1280",
        geo_latitude="-33.8688",
        tr_total="1e3",
        ti_price=".5",
        br_features_pdf="1",
        dvce_ismobile="0",
        collector_tstamp="2024-05-01 12:00:00.123",
        true_tstamp="2024-02-29 23:59:59",
        se_value="2.5",
        page_title="Café ☕",
        user_id="",
    )
    assert event == {
        "app_id": "shop",
        "txn_id": -42,
        "doc_width": 1280,
        "geo_latitude": -33.8688,
        "tr_total": 1000.0,
        "ti_price": 0.5,
        "br_features_pdf": True,
        "dvce_ismobile": False,
        "collector_tstamp": "2024-05-01T12:00:00.123Z",
        "true_tstamp": "2024-02-29T23:59:59Z",
        "se_value": "2.5",  # a string, as the Python SDK has it
        "page_title": "Café ☕",
    }


def test_a_line_of_empty_fields_is_an_empty_object() -> None:
    assert _event() == {}
    assert enriched_json(enriched_line().encode()) == b"{}"


def test_geo_location_needs_both_latitude_and_longitude() -> None:
    assert "geo_location" not in _event(geo_latitude="52.52")
    both = _event(geo_latitude="52.52", geo_longitude="13.405")
    assert next(iter(both.items())) == ("geo_location", "52.52,13.405")


@pytest.mark.parametrize(
    ("schema", "key"),
    [
        ("iglu:com.acme.Foo/someEvent/jsonschema/1-0-0", "contexts_com_acme_foo_some_event_1"),
        ("iglu:org.w3/PerformanceTiming/jsonschema/1-0-0", "contexts_org_w3_performance_timing_1"),
        (CLIENT_SESSION, "contexts_com_snowplowanalytics_snowplow_client_session_1"),
        ("iglu:com.acme/userID/jsonschema/12-3-4", "contexts_com_acme_user_id_12"),
        ("iglu:com.acme/URLClick/jsonschema/1-0-0", "contexts_com_acme_urlclick_1"),
        ("iglu:com.acme/a_B/jsonschema/1-0-0", "contexts_com_acme_a_b_1"),
        # a dash stays, as in the Python SDK (the Scala SDK writes _)
        ("iglu:com.acme-corp/x-y/jsonschema/2-1-0", "contexts_com_acme-corp_x-y_2"),
    ],
)
def test_a_contexts_key_is_the_vendor_the_snake_cased_name_and_the_model(
    schema: str, key: str
) -> None:
    assert _event(contexts=[context(schema, {"a": 1})]) == {key: [{"a": 1}]}


def test_entities_of_one_schema_and_model_share_an_array_in_their_order() -> None:
    event = _event(
        contexts=[
            context(THING, {"n": 1}),
            context("iglu:com.acme/thing/jsonschema/2-0-0", {"n": 2}),
            context("iglu:com.acme/thing/jsonschema/1-1-0", {"n": 3}),
        ]
    )
    assert event == {
        "contexts_com_acme_thing_1": [{"n": 1}, {"n": 3}],
        "contexts_com_acme_thing_2": [{"n": 2}],
    }


def test_derived_contexts_join_the_contexts_of_the_same_key_after_them() -> None:
    event = _event(
        contexts=[context(THING, {"from": "tracker"})],
        derived_contexts=[
            context(THING, {"from": "enrich"}),
            context("iglu:com.acme/other/jsonschema/1-0-0", {}),
        ],
    )
    assert event == {
        "contexts_com_acme_thing_1": [{"from": "tracker"}, {"from": "enrich"}],
        "contexts_com_acme_other_1": [{}],
    }


def test_any_wrapper_of_model_1_is_taken_and_empty_contexts_give_no_key() -> None:
    wrapper = CONTEXTS_SCHEMA.replace("1-0-0", "1-0-1")
    assert _event(contexts={"schema": wrapper, "data": [context(THING, {})]}) == {
        "contexts_com_acme_thing_1": [{}]
    }
    assert _event(contexts=[], derived_contexts=[]) == {}


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_line_ending_is_not_part_of_the_last_field(ending: bytes) -> None:
    line = enriched_line(event_id="e1", true_tstamp="2024-05-01 12:00:00.000").encode()
    assert enriched_event(line + ending) == enriched_event(line)
    assert enriched_event(line + ending)["true_tstamp"] == "2024-05-01T12:00:00.000Z"


def test_a_line_without_an_event_id_is_an_event_here() -> None:
    assert _event(domain_userid="d1") == {"domain_userid": "d1"}


def test_the_json_is_the_event_encoded() -> None:
    line = mobile_screen_view(user_id="a@b.com").encode()
    assert orjson.loads(enriched_json(line)) == enriched_event(line)


# -- malformed lines: each a BadRecord saying what is wrong ----------------------------


def test_a_line_that_is_not_utf8_names_the_field() -> None:
    line = enriched_line(app_id="shop", page_title="X").encode().replace(b"X", b"\xff")
    assert _reason(line).startswith("page_title: not UTF-8 (invalid start byte at byte ")


@pytest.mark.parametrize("fields", [130, 132, 1])
def test_a_line_of_another_number_of_fields_says_how_many(fields: int) -> None:
    assert _reason("\t".join(["x"] * fields)) == (
        f"an enriched event has 131 tab-separated fields; this line has {fields}"
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("doc_width", "12px", "doc_width: '12px' is not an integer"),
        ("txn_id", " 12", "txn_id: ' 12' is not an integer"),
        ("txn_id", "1_000", "txn_id: '1_000' is not an integer"),
        ("txn_id", "١٢", "txn_id: '١٢' is not an integer"),
        ("txn_id", "9" * 19, f"txn_id: '{'9' * 19}' is out of the 64-bit integer range"),
        ("geo_latitude", "north", "geo_latitude: 'north' is not a number"),
        ("geo_latitude", "nan", "geo_latitude: 'nan' is not a number"),
        ("tr_total", "1e999", "tr_total: '1e999' is too large for a double"),
        ("br_cookies", "true", r"br_cookies: 'true' is not a boolean \(1 or 0\)"),
        ("collector_tstamp", "yesterday", "collector_tstamp: 'yesterday' is not a timestamp"),
        ("etl_tstamp", "2024-05-01T12:00:00.000Z", "etl_tstamp: '2024-05-01T12:00:00.000Z'"),
        ("etl_tstamp", "2024-05-01 12:00", r"etl_tstamp: .* YYYY-MM-DD hh:mm:ss\[\.fff\]"),
        ("etl_tstamp", "2024-02-30 12:00:00.000", "is not a timestamp: day is out of range"),
        ("etl_tstamp", "2024-05-01 24:00:00", "is not a timestamp: hour must be in 0..23"),
    ],
)
def test_a_value_not_of_its_fields_type_is_named_with_the_field(
    field: str, value: str, reason: str
) -> None:
    with pytest.raises(BadRecord, match=reason):
        _event(**{field: value})


def test_a_long_bad_value_is_shortened_in_the_reason() -> None:
    reason = _reason(enriched_line(doc_height="x" * 10_000))
    assert reason == f"doc_height: '{'x' * 40}…' is not an integer"


@pytest.mark.parametrize("field", ["contexts", "derived_contexts", "unstruct_event"])
def test_json_fields_that_are_not_json(field: str) -> None:
    with pytest.raises(BadRecord, match=f"^{field}: not valid JSON: "):
        _event(**{field: '{"schema": '})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[1]", "contexts is a JSON array, not self-describing JSON"),
        ('"x"', "contexts is a JSON string, not self-describing JSON"),
        ('{"data": []}', "contexts is not self-describing JSON: it has no schema"),
        (
            f'{{"schema": "{CONTEXTS_SCHEMA}"}}',
            "contexts is not self-describing JSON: it has no data",
        ),
        ('{"schema": 1, "data": []}', "contexts: schema is a JSON number, not an Iglu URI"),
        (
            f'{{"schema": "{UNSTRUCT_EVENT_SCHEMA}", "data": []}}',
            "contexts: schema 'iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/"
            "1-0-0' is not com.snowplowanalytics.snowplow/contexts/jsonschema/1-[*]-[*]",
        ),
        (
            '{"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/2-0-0", '
            '"data": []}',
            "is not com.snowplowanalytics.snowplow/contexts/jsonschema/1-",
        ),
        (
            f'{{"schema": "{CONTEXTS_SCHEMA}", "data": {{}}}}',
            "contexts: data is a JSON object, not an array of entities",
        ),
        (
            f'{{"schema": "{CONTEXTS_SCHEMA}", "data": [{{"schema": "{THING}", "data": {{}}}}, '
            '{"id": 1}]}',
            "contexts\\[1\\] is not self-describing JSON: it has no schema",
        ),
    ],
)
def test_contexts_that_are_not_self_describing(value: str, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        _event(contexts=value)


@pytest.mark.parametrize(
    "schema",
    [
        "iglu:com.acme/thing/jsonschema/1-0",
        "iglu:com.acme/thing/jsonschema/0-1-0",
        "iglu:com.acme/thing/1-0-0",
        "iglu:com acme/thing/jsonschema/1-0-0",
        "http://iglucentral.com/schemas/com.acme/thing/jsonschema/1-0-0",
        "iglu:com.acme/thing/jsonschema/1-0-0\n",
    ],
)
def test_an_entity_whose_schema_is_not_an_iglu_uri(schema: str) -> None:
    with pytest.raises(BadRecord, match=r"^derived_contexts\[0\]: schema .* is not an Iglu URI"):
        _event(derived_contexts=[context(schema, {})])


@pytest.mark.parametrize(("data", "kind"), [("x", "string"), ([], "array"), (None, "null")])
def test_an_entitys_data_must_be_an_object(data: Any, kind: str) -> None:
    entities = [{"schema": THING, "data": {}}, {"schema": THING, "data": data}]
    with pytest.raises(BadRecord, match=rf"^contexts\[1\] \({THING}\): data is a JSON {kind}, not"):
        _event(contexts=orjson.dumps({"schema": CONTEXTS_SCHEMA, "data": entities}).decode())
    with pytest.raises(
        BadRecord, match=rf"^unstruct_event data \({THING}\): data is a JSON {kind}"
    ):
        _event(unstruct_event={"schema": THING, "data": data})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"schema": UNSTRUCT_EVENT_SCHEMA, "data": [1]}, "unstruct_event data is a JSON array"),
        ({"schema": UNSTRUCT_EVENT_SCHEMA, "data": {"data": {}}}, "data is not self-describing"),
        ({"schema": CONTEXTS_SCHEMA, "data": context(THING, {})}, "is not com.snowplowanalytics"),
        ({"schema": UNSTRUCT_EVENT_SCHEMA, "data": context("iglu:x", {})}, "not an Iglu URI"),
    ],
)
def test_an_unstruct_event_that_is_not_one_self_describing_event(
    value: dict[str, Any], reason: str
) -> None:
    line = enriched_line(unstruct_event=orjson.dumps(value).decode())
    with pytest.raises(BadRecord, match=reason):
        enriched_event(line.encode())


# -- whatever arrives: an event or a BadRecord, never another error ---------------------


def _outcome(line: bytes) -> bytes | str:
    """The line's JSON, or the reason it is a bad record."""
    try:
        return enriched_json(line)
    except BadRecord as exc:
        return exc.reason


_JSON: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_ENTITY = st.builds(
    context, st.sampled_from([THING, LINK_CLICK]), st.dictionaries(st.text(max_size=6), _JSON)
) | st.fixed_dictionaries(
    {}, optional={"schema": st.sampled_from([THING, "iglu:x", CONTEXTS_SCHEMA]), "data": _JSON}
)
_FIELD = st.text(max_size=12).map(lambda s: s.replace("\t", " ")) | st.sampled_from(
    ["1", "0", "-7", "2.5", "2024-05-01 12:00:00.000", "9" * 30]
)
_ANY = _JSON.map(json.dumps) | _FIELD  # json: NaN, Infinity and integers beyond 64 bits too
_CONTEXTS = st.lists(_ENTITY, max_size=3).map(
    lambda data: json.dumps({"schema": CONTEXTS_SCHEMA, "data": data})
)
_UNSTRUCT = _ENTITY.map(lambda data: json.dumps({"schema": UNSTRUCT_EVENT_SCHEMA, "data": data}))
_LINES = st.tuples(
    st.dictionaries(st.sampled_from(FIELDS), _FIELD, max_size=8),
    st.fixed_dictionaries(
        {
            "contexts": st.just("") | _CONTEXTS | _ANY,
            "unstruct_event": st.just("") | _UNSTRUCT | _ANY,
            "derived_contexts": st.just("") | _CONTEXTS | _ANY,
        }
    ),
).map(lambda fields: {**fields[0], **fields[1]})


@settings(max_examples=300, deadline=None)
@given(_LINES)
def test_any_line_is_an_event_that_encodes_or_a_bad_record(fields: dict[str, str]) -> None:
    line = "\t".join(fields.get(name, "") for name in FIELDS).encode()
    outcome = _outcome(line)
    assert outcome if isinstance(outcome, str) else orjson.loads(outcome) == enriched_event(line)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 140))
def test_any_bytes_are_an_event_or_a_bad_record(noise: bytes, tabs: int) -> None:
    assert _outcome(noise)
    assert _outcome(b"\t" * tabs + noise)
