"""Helpers for the unit tests: events, and a whole stream through the pipeline in memory."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streams.core.control import Erasures
from streams.core.rules import RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.stitch import stitch
from streams.state.partition import PartitionState
from streams.state.retention import Retention
from streams.state.store import MemoryStore


def event(
    event_id: str | None,
    anonymous_id: Any = "1",
    *,
    email: Any = None,
    user_id: Any = None,
    **extra: Any,
) -> bytes:
    user: dict[str, Any] = {"anonymous_id": anonymous_id}
    if email is not None:
        user["email"] = email
    if user_id is not None:
        user["id"] = user_id
    doc: dict[str, Any] = {"user": user, **extra}
    if event_id is not None:
        doc["eventn_ctx_event_id"] = event_id
    return orjson.dumps(doc)


class Run:
    """A stream processed batch by batch against one in-memory store, as the worker does."""

    def __init__(
        self,
        rules: RecognitionRules | None = None,
        retention: Retention | None = None,
        *,
        mappings: bool = False,
    ) -> None:
        self.rules = rules or RecognitionRules()
        self.retention = retention or Retention()
        self.mappings = mappings  # identity records on (the user mapping table)
        self.store = MemoryStore()
        self.counts: Counters = Counters()
        self.records: list[dict[str, Any]] = []
        self.dead: list[str] = []
        self.erasures = Erasures()  # the worker's: what erase commands covered
        self._offset = 0

    def feed(self, *values: bytes, at: int = 0, clock: int | None = None) -> list[dict[str, Any]]:
        """One batch, its records stamped ``at`` (ms); returns the sink records it emitted,
        decoded."""
        batch = []
        for value in values:
            batch.append(InputRecord("t", 0, self._offset, None, value, at))
            self._offset += 1
        result = stitch(
            batch, self.state(), self.rules, self.counts, clock_ms=clock, erasures=self.erasures
        )
        self.store.write(result.changes)
        emitted = [orjson.loads(r.value) for r in result.sink]
        self.records += emitted
        self.dead += [d.reason for d in result.dead]
        return emitted

    def state(self) -> PartitionState:
        """The partition's state, as one batch sees it."""
        return PartitionState(self.store, self.retention, mappings=self.mappings)

    def feed_batches(self, batches: Iterable[Sequence[bytes]]) -> list[dict[str, Any]]:
        return [record for batch in batches for record in self.feed(*batch)]

    def latest(self) -> dict[str, dict[str, Any]]:
        """The warehouse view: the highest version of each event id (and, for identity
        records, of each ``identity:<anonymous id>``)."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.records:
            key = record.get("event_id") or f"identity:{record['anonymous_id']}"
            known = latest.get(key)
            if known is None or record["version"] > known["version"]:
                latest[key] = record
        return latest
