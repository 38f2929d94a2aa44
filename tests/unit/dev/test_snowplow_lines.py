"""The enriched lines the tests and ``demo --snowplow`` feed (``streams.dev.snowplow``)."""

from __future__ import annotations

import pytest

from streams.core.snowplow import FIELDS, UNSTRUCT_EVENT_SCHEMA, enriched_event
from streams.dev.snowplow import BROWSER, SCREEN_VIEW, context, demo_stream, enriched_line


def test_the_builder_puts_each_value_in_its_field_and_leaves_the_rest_empty() -> None:
    values = enriched_line(event_id="e1", doc_width=1280, br_cookies=False).split("\t")
    assert len(values) == 131
    assert {FIELDS[i]: v for i, v in enumerate(values) if v} == {
        "event_id": "e1",
        "doc_width": "1280",
        "br_cookies": "0",
    }


def test_the_builder_refuses_unknown_fields_and_values_that_break_the_line() -> None:
    with pytest.raises(ValueError, match=r"'user_idd' is not a field .* did you mean 'user_id'"):
        enriched_line(user_idd="a")
    with pytest.raises(ValueError, match="page_title: a value cannot hold a tab"):
        enriched_line(page_title="a\tb")
    with pytest.raises(ValueError, match="app_id: only contexts, derived_contexts"):
        enriched_line(app_id={"a": 1})


def test_the_builder_wraps_an_unstruct_event_once() -> None:
    wrapped = {"schema": UNSTRUCT_EVENT_SCHEMA, "data": context(SCREEN_VIEW, {"name": "a"})}
    assert enriched_line(unstruct_event=wrapped) == enriched_line(
        unstruct_event=context(SCREEN_VIEW, {"name": "a"})
    )


def test_the_demo_stream_is_a_shared_browser_an_app_and_one_bad_line() -> None:
    before, after = demo_stream()
    *good, bad = after
    events = [enriched_event(line) for line in (*before, *good)]
    assert [e.get("user_id") for e in events if e["platform"] == "web"] == [
        None, None, None, "user-a", None, None, "user-b", None,
    ]  # fmt: skip
    assert {e.get("domain_userid") for e in events if e["platform"] == "web"} == {BROWSER}
    assert "\t" not in bad.decode()
