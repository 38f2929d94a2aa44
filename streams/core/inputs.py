"""What the input topic's records are: the JSON events the rules read, or Snowplow's
enriched TSV lines turned into those (``topics.input_format``).

Only records read from the input topic are converted: the repartition topic carries the
JSON the route agent made of them, and the dead letters carry the record as it arrived.
"""

from __future__ import annotations

from enum import StrEnum

from streams.core.snowplow import enriched_json

__all__ = ["InputFormat", "as_json"]


class InputFormat(StrEnum):
    """The format of the input topic's record values."""

    JSON = "json"  # one JSON object per record (Jitsu, Segment, Snowplow's enriched JSON)
    SNOWPLOW_ENRICHED_TSV = "snowplow_enriched_tsv"  # Snowplow enrich's Kafka output


def as_json(value: bytes, input_format: InputFormat) -> bytes:
    """An input record's value as the JSON event the rules read; BadRecord says why a value
    is not of its format (``streams.core.snowplow.enriched_event``)."""
    if input_format is InputFormat.SNOWPLOW_ENRICHED_TSV:
        return enriched_json(value)
    return value
