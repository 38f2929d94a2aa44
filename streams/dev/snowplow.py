"""Snowplow enriched events to feed the stitcher: one TSV line from field values, and two
example builders (a web page view, a mobile screen view) for tests and the demo.

>>> line = enriched_line(event_id="e1", domain_userid="d1")
>>> line.count("\\t"), line.split("\\t")[6]
(130, 'e1')
>>> from streams.core.snowplow import enriched_event
>>> enriched_event(web_page_view(user_id="a@b.com").encode())["user_id"]
'a@b.com'
"""

from __future__ import annotations

import difflib
from typing import Any

import orjson

from streams.core.snowplow import CONTEXTS_SCHEMA, FIELDS, UNSTRUCT_EVENT_SCHEMA

__all__ = [
    "BROWSER",
    "CLIENT_SESSION",
    "ENVIRONMENT",
    "INSTALL",
    "PERFORMANCE_TIMING",
    "SCREEN_VIEW",
    "USER_IDENTIFIER",
    "WEB_PAGE",
    "FieldValue",
    "context",
    "demo_stream",
    "enriched_line",
    "mobile_screen_view",
    "web_page_view",
]

#: Snowplow's user identifier: the client session context's ``userId`` (mobile trackers),
#: else the first-party cookie ``domain_userid`` (web): the first usable one wins
USER_IDENTIFIER = (
    "/contexts_com_snowplowanalytics_snowplow_client_session_1/0/userId,/domain_userid"
)

#: the settings (environment variables) that make the stitcher read a Snowplow pipeline:
#: enrich's TSV on the input topic, Snowplow's ids, its "latest user id wins"
ENVIRONMENT = {
    "RETROSTITCH_INPUT_FORMAT": "snowplow_enriched_tsv",
    "USER_RECOGNITION_ANONYMOUS_ID_NODE": USER_IDENTIFIER,
    "USER_RECOGNITION_IDENTIFICATION_NODES": "/user_id",
    "USER_RECOGNITION_EVENT_ID_NODE": "/event_id",
    "USER_RECOGNITION_BOT_USER_AGENT_NODE": "/useragent",
    "USER_RECOGNITION_IDENTITY_CONFLICT_POLICY": "latest",
    "RETROSTITCH_EVENT_TIME_NODE": "/collector_tstamp",
}

#: the examples' visitors: a browser's first-party cookie (``domain_userid``) and an app
#: install's user identifier (the client session's ``userId``)
BROWSER = "b2f1c6c0-8f4e-4c1e-9d2a-3c1f0e7d5a41"
INSTALL = "3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d"

#: the schemas of the examples' entities
WEB_PAGE = "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0"
PERFORMANCE_TIMING = "iglu:org.w3/PerformanceTiming/jsonschema/1-0-0"
CLIENT_SESSION = "iglu:com.snowplowanalytics.snowplow/client_session/jsonschema/1-0-2"
SCREEN_VIEW = "iglu:com.snowplowanalytics.mobile/screen_view/jsonschema/1-0-0"

#: a field's value: text as it stands in the line (None or "" for an empty field), a number,
#: a boolean (written 1 / 0), or the entities of contexts, derived_contexts, unstruct_event
FieldValue = str | int | float | dict[str, Any] | list[dict[str, Any]] | None

_INDEX = {name: index for index, name in enumerate(FIELDS)}
_CONTEXTS = frozenset({"contexts", "derived_contexts"})


def context(schema: str, data: dict[str, Any]) -> dict[str, Any]:
    """One self-describing entity: a context, or the event of ``unstruct_event``."""
    return {"schema": schema, "data": data}


def _json_field(name: str, value: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Entities as their field's self-describing JSON; a field's whole JSON stays as it is."""
    if name in _CONTEXTS:
        if isinstance(value, list):
            value = {"schema": CONTEXTS_SCHEMA, "data": value}
        return orjson.dumps(value).decode()
    if name == "unstruct_event" and isinstance(value, dict):
        if value.get("schema") != UNSTRUCT_EVENT_SCHEMA:
            value = context(UNSTRUCT_EVENT_SCHEMA, value)
        return orjson.dumps(value).decode()
    raise ValueError(
        f"{name}: only contexts, derived_contexts (a list of entities) and unstruct_event "
        f"(one entity) take JSON; got {value!r:.60}"
    )


def _text(name: str, value: FieldValue) -> str:
    """A field's value as the line carries it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        return _json_field(name, value)
    if "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{name}: a value cannot hold a tab or a line break: {value!r:.60}")
    return value


def enriched_line(**fields: FieldValue) -> str:
    """An enriched event TSV line (no line ending) with these fields, every other one empty.

    Strings stand as given (raw JSON for contexts too, so that tests can write bad JSON);
    ``contexts`` and ``derived_contexts`` take a list of entities, ``unstruct_event`` one
    entity (``context(schema, data)``), each wrapped in its field's self-describing JSON;
    a dict that already is that whole JSON (an unstruct_event's: of its wrapper schema)
    stands as given. Raises ValueError for an unknown field or a value holding a tab or
    a line break.
    """
    values = [""] * len(FIELDS)
    for name, value in fields.items():
        index = _INDEX.get(name)
        if index is None:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{name!r} is not a field of the enriched event{hint}")
        values[index] = _text(name, value)
    return "\t".join(values)


def _common(**fields: FieldValue) -> dict[str, FieldValue]:
    """What every example's enrich writes, then the example's own fields."""
    return {
        "etl_tstamp": "2024-05-01 12:00:01.250",
        "v_collector": "ssc-3.2.0-kafka",
        "v_etl": "snowplow-enrich-kafka-5.1.0",
        "user_ipaddress": "203.0.113.7",
        "network_userid": "ecdff4d0-9175-40ac-a8bb-325c49733607",
        "geo_country": "DE",
        "geo_city": "Berlin",
        "geo_latitude": "52.52",
        "geo_longitude": "13.405",
        "geo_timezone": "Europe/Berlin",
        "event_format": "jsonschema",
        **fields,
    }


def web_page_view(
    *,
    event_id: str = "c6ef3124-b53a-4b13-a233-0088f79dcbcb",
    domain_userid: str = BROWSER,
    user_id: str | None = None,
    domain_sessionid: str = "59ed13b1-a5c6-42d2-b4e1-36b1b0b9ac4b",
    domain_sessionidx: int = 1,
    collector_tstamp: str = "2024-05-01 12:00:00.123",
    page_url: str = "https://shop.example/products/42?ref=home",
    app_id: str = "shop",
) -> str:
    """A page view of the JavaScript tracker: the browser's ``domain_userid`` (its first-party
    cookie) and, once the visitor has signed in, ``user_id``; contexts web_page and
    org.w3's PerformanceTiming."""
    return enriched_line(
        **_common(
            app_id=app_id,
            platform="web",
            collector_tstamp=collector_tstamp,
            dvce_created_tstamp="2024-05-01 11:59:59.870",
            event="page_view",
            event_id=event_id,
            name_tracker="sp",
            v_tracker="js-3.23.0",
            user_id=user_id,
            domain_userid=domain_userid,
            domain_sessionidx=domain_sessionidx,
            page_url=page_url,
            page_title="Product 42",
            page_urlscheme="https",
            page_urlhost="shop.example",
            page_urlport=443,
            page_urlpath="/products/42",
            page_urlquery="ref=home",
            contexts=[
                context(WEB_PAGE, {"id": "a86e4d2f-5b3c-4f0a-9e61-0f5b2f9c7d13"}),
                context(
                    PERFORMANCE_TIMING,
                    {"navigationStart": 1714564799000, "loadEventEnd": 1714564799850},
                ),
            ],
            useragent="Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            br_lang="de-DE",
            br_features_pdf=True,
            br_cookies=True,
            br_colordepth="24",
            br_viewwidth=1280,
            br_viewheight=720,
            os_timezone="Europe/Berlin",
            dvce_screenwidth=1920,
            dvce_screenheight=1080,
            doc_charset="UTF-8",
            doc_width=1280,
            doc_height=3400,
            dvce_sent_tstamp="2024-05-01 11:59:59.901",
            domain_sessionid=domain_sessionid,
            derived_tstamp="2024-05-01 12:00:00.092",
            event_vendor="com.snowplowanalytics.snowplow",
            event_name="page_view",
            event_version="1-0-0",
        )
    )


def mobile_screen_view(
    *,
    event_id: str = "f1c7b8d2-3e4a-4b5c-8d9e-0a1b2c3d4e5f",
    mobile_user_id: str = INSTALL,
    user_id: str | None = None,
    session_id: str = "0e5a9c1b-2d3f-4e6a-8b7c-9d0e1f2a3b4c",
    session_index: int = 1,
    previous_session_id: str | None = None,
    screen_name: str = "home",
    collector_tstamp: str = "2024-05-01 12:05:00.456",
    app_id: str = "shop-android",
) -> str:
    """A screen view of the mobile tracker: no cookie, so no ``domain_userid``; the install's
    user identifier is the ``userId`` of the client session context (``mobile_user_id``),
    beside the session's id, index and previous session; ``user_id`` once signed in."""
    session = {
        "userId": mobile_user_id,
        "sessionId": session_id,
        "sessionIndex": session_index,
        "previousSessionId": previous_session_id,
        "storageMechanism": "SQLITE",
    }
    return enriched_line(
        **_common(
            app_id=app_id,
            platform="mob",
            collector_tstamp=collector_tstamp,
            dvce_created_tstamp="2024-05-01 12:04:59.990",
            event="unstruct",
            event_id=event_id,
            name_tracker="androidTracker",
            v_tracker="andr-6.0.0",
            user_id=user_id,
            contexts=[context(CLIENT_SESSION, session)],
            unstruct_event=context(
                SCREEN_VIEW, {"name": screen_name, "id": "5c2a7e0b-9f1d-4c3e-8a6b-1d2e3f4a5b6c"}
            ),
            dvce_sent_tstamp="2024-05-01 12:05:00.010",
            derived_tstamp="2024-05-01 12:05:00.436",
            event_vendor="com.snowplowanalytics.mobile",
            event_name="screen_view",
            event_version="1-0-0",
        )
    )


def demo_stream() -> tuple[list[bytes], list[bytes]]:
    """``retrostitch demo --snowplow``, and the tests': enriched lines before and after
    identification. The shared device of rule 6 (docs/rules.md) on a browser (``BROWSER``;
    page views ``web-1`` … ``web-8``: three anonymous, user-a signs in, two more, user-b
    signs in, one more), an app install (``INSTALL``; ``app-1`` anonymous, ``app-2``
    signed in as user-c), and a line that is no enriched event."""

    def web(n: int, user_id: str | None = None) -> bytes:
        stamp = f"2024-05-01 12:00:0{n}.000"
        return web_page_view(event_id=f"web-{n}", user_id=user_id, collector_tstamp=stamp).encode()

    def app(n: int, user_id: str | None = None) -> bytes:
        stamp = f"2024-05-01 12:05:0{n}.000"
        line = mobile_screen_view(event_id=f"app-{n}", user_id=user_id, collector_tstamp=stamp)
        return line.encode()

    broken = b"not an enriched event: a dead letter, with the reason"
    before = [web(1), web(2), web(3), app(1)]
    after = [web(4, "user-a"), web(5), web(6), web(7, "user-b"), web(8), app(2, "user-c"), broken]
    return before, after
