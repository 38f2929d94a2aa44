"""Snowplow enriched events as the flat JSON object of Snowplow's analytics SDKs.

Snowplow's enrich writes each event to Kafka as one line of 131 tab-separated fields in a
published order (``FIELDS``). ``enriched_event`` turns such a line into the JSON object of
the analytics SDKs' event transformer (the Python SDK's ``event_transformer.transform``):

    app_id=shop  platform=web  collector_tstamp=2024-05-01 12:00:00.123  event=page_view
    domain_sessionidx=3  br_cookies=1  geo_latitude=52.52  geo_longitude=13.405
    contexts={"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
              "data": [{"schema": "iglu:org.w3/PerformanceTiming/jsonschema/1-0-0",
                        "data": {"loadEventEnd": 1714564800500}}]}
    (every other field empty)
    →
    {"geo_location": "52.52,13.405", "app_id": "shop", "platform": "web",
     "collector_tstamp": "2024-05-01T12:00:00.123Z", "event": "page_view",
     "domain_sessionidx": 3, "geo_latitude": 52.52, "geo_longitude": 13.405,
     "br_cookies": true, "contexts_org_w3_performance_timing_1": [{"loadEventEnd": 1714564800500}]}

- Empty fields are left out. Integers (64-bit), finite floats and booleans (``1``/``0``)
  are typed; timestamps become ISO 8601 in UTC (``2024-05-01T12:00:00.123Z``); every other
  field stays the string it is (``se_value`` too, as in the Python SDK).
- ``geo_location`` (first) is ``"<latitude>,<longitude>"`` where both are present.
- Each entity of ``contexts`` and ``derived_contexts`` goes to the array at
  ``contexts_<vendor>_<name>_<model>``, and the event of ``unstruct_event`` to the object
  at ``unstruct_event_<vendor>_<name>_<model>``: the vendor with ``.`` as ``_``, the name
  snake-cased where a capital follows another character (``someEvent`` → ``some_event``),
  both lower-cased, and the schema's model (major version). These keys come after the
  fields, in the order of the entities.
- Where ``contexts`` and ``derived_contexts`` carry the same key, its array holds both,
  contexts first (the SDKs keep only the derived ones).

Anything else is a ``BadRecord`` whose reason names the field and says what is wrong with
it: a line that is not UTF-8 or has another number of fields, a value that is not of its
field's type, JSON that is not valid or not self-describing, a schema that is not an Iglu
URI, data of the wrong JSON type. Which fields an event must have (an event id, a user id)
is for the rules to say, not this.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import lru_cache
from itertools import compress
from math import isfinite
from operator import itemgetter
from typing import Any

import orjson

from streams.core.errors import BadRecord

__all__ = ["CONTEXTS_SCHEMA", "FIELDS", "UNSTRUCT_EVENT_SCHEMA", "enriched_event", "enriched_json"]

#: the schemas that wrap the entities of contexts / derived_contexts and of unstruct_event
CONTEXTS_SCHEMA = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0"
UNSTRUCT_EVENT_SCHEMA = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0"

# The fields in their published order, each marked with its type unless it is a string:
# i integer, f float, b boolean, t timestamp, c contexts, u unstruct_event.
_LAYOUT = """
    app_id platform etl_tstamp:t collector_tstamp:t dvce_created_tstamp:t event event_id
    txn_id:i name_tracker v_tracker v_collector v_etl user_id user_ipaddress user_fingerprint
    domain_userid domain_sessionidx:i network_userid geo_country geo_region geo_city
    geo_zipcode geo_latitude:f geo_longitude:f geo_region_name ip_isp ip_organization
    ip_domain ip_netspeed page_url page_title page_referrer page_urlscheme page_urlhost
    page_urlport:i page_urlpath page_urlquery page_urlfragment refr_urlscheme refr_urlhost
    refr_urlport:i refr_urlpath refr_urlquery refr_urlfragment refr_medium refr_source
    refr_term mkt_medium mkt_source mkt_term mkt_content mkt_campaign contexts:c
    se_category se_action se_label se_property se_value unstruct_event:u tr_orderid
    tr_affiliation tr_total:f tr_tax:f tr_shipping:f tr_city tr_state tr_country ti_orderid
    ti_sku ti_name ti_category ti_price:f ti_quantity:i pp_xoffset_min:i pp_xoffset_max:i
    pp_yoffset_min:i pp_yoffset_max:i useragent br_name br_family br_version br_type
    br_renderengine br_lang br_features_pdf:b br_features_flash:b br_features_java:b
    br_features_director:b br_features_quicktime:b br_features_realplayer:b
    br_features_windowsmedia:b br_features_gears:b br_features_silverlight:b br_cookies:b
    br_colordepth br_viewwidth:i br_viewheight:i os_name os_family os_manufacturer
    os_timezone dvce_type dvce_ismobile:b dvce_screenwidth:i dvce_screenheight:i doc_charset
    doc_width:i doc_height:i tr_currency tr_total_base:f tr_tax_base:f tr_shipping_base:f
    ti_currency ti_price_base:f base_currency geo_timezone mkt_clickid mkt_network etl_tags
    dvce_sent_tstamp:t refr_domain_userid refr_device_tstamp:t derived_contexts:c
    domain_sessionid derived_tstamp:t event_vendor event_name event_format event_version
    event_fingerprint true_tstamp:t
"""


def _column(text: str) -> tuple[str, str]:
    """A field's name and type letter (empty for a string) from the layout."""
    name, _, kind = text.partition(":")
    return name, kind


_COLUMNS = tuple(map(_column, _LAYOUT.split()))
FIELDS: tuple[str, ...] = tuple(name for name, _ in _COLUMNS)
_LATITUDE, _LONGITUDE = FIELDS.index("geo_latitude"), FIELDS.index("geo_longitude")

#: writes one non-empty field's keys into the event, or raises BadRecord
_Convert = Callable[[dict[str, Any], str, str], None]

_INTEGER = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?")
_IGLU = re.compile(
    r"iglu:(?P<vendor>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_-]+)/(?P<format>[A-Za-z0-9_-]+)/"
    r"(?P<model>[1-9][0-9]*)-(?:0|[1-9][0-9]*)-(?:0|[1-9][0-9]*)"
)
_CAPITAL = re.compile(r"([^A-Z_])([A-Z])")
_INT64 = range(-(2**63), 2**63)
_SHOWN = 40  # characters of a bad value that a reason quotes (of a schema, three times that)


def _shown(value: str, limit: int = _SHOWN) -> str:
    """The value quoted for a reason, cut to its first ``limit`` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for reasons."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _integer(event: dict[str, Any], name: str, value: str) -> None:
    """A decimal integer that fits 64 bits (what orjson encodes)."""
    if value.isascii() and value.isdigit() and len(value) < 19:  # most: short, unsigned
        event[name] = int(value)
        return
    if _INTEGER.fullmatch(value) is None:
        raise BadRecord(f"{name}: {_shown(value)} is not an integer")
    number = int(value)
    if number not in _INT64:
        raise BadRecord(f"{name}: {_shown(value)} is out of the 64-bit integer range")
    event[name] = number


def _float(event: dict[str, Any], name: str, value: str) -> None:
    """A finite decimal number (no NaN or infinity, which JSON cannot hold)."""
    if _FLOAT.fullmatch(value) is None:
        raise BadRecord(f"{name}: {_shown(value)} is not a number")
    number = float(value)
    if not isfinite(number):
        raise BadRecord(f"{name}: {_shown(value)} is too large for a double")
    event[name] = number


def _boolean(event: dict[str, Any], name: str, value: str) -> None:
    """``1`` is true and ``0`` false; nothing else is a boolean."""
    if value == "1":
        event[name] = True
    elif value == "0":
        event[name] = False
    else:
        raise BadRecord(f"{name}: {_shown(value)} is not a boolean (1 or 0)")


def _timestamp(event: dict[str, Any], name: str, value: str) -> None:
    """``YYYY-MM-DD hh:mm:ss[.fff]`` of a real day and time, in UTC, as ISO 8601 with Z."""
    if _TIMESTAMP.fullmatch(value) is None:
        raise BadRecord(f"{name}: {_shown(value)} is not a timestamp YYYY-MM-DD hh:mm:ss[.fff]")
    try:
        datetime.fromisoformat(value)  # the day and time exist
    except ValueError as exc:
        raise BadRecord(f"{name}: {_shown(value)} is not a timestamp: {exc}") from None
    event[name] = value.replace(" ", "T") + "Z"


@lru_cache(maxsize=4096)
def _model(schema: str) -> tuple[str, str, str, str] | None:
    """Vendor, name, format and model of an Iglu URI, or None if it is not one."""
    parts = _IGLU.fullmatch(schema)
    if parts is None:
        return None
    return parts["vendor"], parts["name"], parts["format"], parts["model"]


@lru_cache(maxsize=4096)
def _key(prefix: str, schema: str) -> str | None:
    """The SDKs' key for an entity of this schema, or None if it is not an Iglu URI."""
    parts = _model(schema)
    if parts is None:
        return None
    vendor, name, _, model = parts
    vendor = vendor.replace(".", "_").lower()
    name = _CAPITAL.sub(r"\1_\2", name).lower()
    return f"{prefix}_{vendor}_{name}_{model}"


def _self_describing(where: str, node: Any) -> tuple[str, Any]:
    """The schema and data of a self-describing JSON object."""
    if not isinstance(node, dict):
        raise BadRecord(
            f"{where} is a JSON {_json_type(node)}, not self-describing JSON "
            "(an object with schema and data)"
        )
    for part in ("schema", "data"):
        if part not in node:
            raise BadRecord(f"{where} is not self-describing JSON: it has no {part}")
    schema = node["schema"]
    if not isinstance(schema, str):
        raise BadRecord(f"{where}: schema is a JSON {_json_type(schema)}, not an Iglu URI")
    return schema, node["data"]


def _wrapped(name: str, value: str, wrapper: str) -> Any:
    """The data of a field's self-describing JSON, whose schema is a version of ``wrapper``
    with the same model (``…/jsonschema/1-0-0`` takes any ``1-*-*``)."""
    try:
        node = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"{name}: not valid JSON: {exc}") from None
    schema, data = _self_describing(name, node)
    if schema != wrapper and _model(schema) != _model(wrapper):
        expected = wrapper.removeprefix("iglu:").removesuffix("0-0")
        raise BadRecord(f"{name}: schema {_shown(schema, 3 * _SHOWN)} is not {expected}*-*")
    return data


def _entity(prefix: str, where: str, node: Any) -> tuple[str, dict[str, Any]]:
    """The key and data object of one self-describing entity."""
    schema, data = _self_describing(where, node)
    key = _key(prefix, schema)
    if key is None:
        raise BadRecord(
            f"{where}: schema {_shown(schema, 3 * _SHOWN)} is not an Iglu URI "
            "iglu:vendor/name/format/model-revision-addition"
        )
    if not isinstance(data, dict):
        raise BadRecord(f"{where} ({schema}): data is a JSON {_json_type(data)}, not an object")
    return key, data


def _entities(name: str, value: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The keys and data of the entities in a contexts field."""
    data = _wrapped(name, value, CONTEXTS_SCHEMA)
    if not isinstance(data, list):
        raise BadRecord(f"{name}: data is a JSON {_json_type(data)}, not an array of entities")
    for index, node in enumerate(data):
        yield _entity("contexts", f"{name}[{index}]", node)


def _contexts(event: dict[str, Any], name: str, value: str) -> None:
    """Each entity's data appended to the array at its schema's key."""
    for key, data in _entities(name, value):
        arrays = event.get(key)
        if arrays is None:
            event[key] = [data]
        else:
            arrays.append(data)


def _unstruct(event: dict[str, Any], name: str, value: str) -> None:
    """The event's data object at its schema's key."""
    key, data = _entity(
        "unstruct_event", f"{name} data", _wrapped(name, value, UNSTRUCT_EVENT_SCHEMA)
    )
    event[key] = data


_KINDS: dict[str, _Convert] = {
    "i": _integer,
    "f": _float,
    "b": _boolean,
    "t": _timestamp,
    "c": _contexts,
    "u": _unstruct,
}
# the typed fields, in order: where each is in the line, its name, its converter
_TYPED = tuple((index, name, _KINDS[kind]) for index, (name, kind) in enumerate(_COLUMNS) if kind)
_TYPED_VALUES = itemgetter(*(index for index, _, _ in _TYPED))
_TYPED_FIELDS = tuple((name, convert) for _, name, convert in _TYPED)
_STRUCTURED = frozenset(name for name, kind in _COLUMNS if kind in "cu")
if len(FIELDS) != 131 or len(set(FIELDS)) != 131:
    raise AssertionError(f"the enriched event has 131 distinct fields, not {len(FIELDS)}")


def _text(line: bytes) -> str:
    """The line as text, without its line ending."""
    if line.endswith(b"\n"):
        line = line[: -2 if line.endswith(b"\r\n") else -1]
    try:
        return line.decode()
    except UnicodeDecodeError as exc:
        index = line.count(b"\t", 0, exc.start)
        field = FIELDS[index] if index < len(FIELDS) else f"field {index + 1}"
        raise BadRecord(
            f"{field}: not UTF-8 ({exc.reason} at byte {exc.start} of the line)"
        ) from None


def enriched_event(line: bytes) -> dict[str, Any]:
    """One enriched event line (UTF-8, with or without its line ending) as the SDKs' JSON
    object; raise BadRecord, naming the field, where the line is not one."""
    values = _text(line).split("\t")
    if len(values) != len(FIELDS):
        raise BadRecord(
            f"an enriched event has {len(FIELDS)} tab-separated fields; this line has {len(values)}"
        )
    event: dict[str, Any] = {}
    if values[_LATITUDE] and values[_LONGITUDE]:
        event["geo_location"] = f"{values[_LATITUDE]},{values[_LONGITUDE]}"
    # every non-empty field as its string, in order; then typed fields take their type in
    # place, and the JSON fields give way to their entities' keys, at the end
    event.update(compress(zip(FIELDS, values, strict=True), values))
    typed = _TYPED_VALUES(values)
    for (name, convert), value in compress(zip(_TYPED_FIELDS, typed, strict=True), typed):
        if name in _STRUCTURED:
            del event[name]
        convert(event, name, value)
    return event


def enriched_json(line: bytes) -> bytes:
    """``enriched_event(line)`` encoded as JSON (orjson: compact, UTF-8)."""
    return orjson.dumps(enriched_event(line))
