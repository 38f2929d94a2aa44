"""Local state a worker cannot trust is set aside and restored: no crash loop on a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from streams.state.rocks import RocksStore
from tests.integration.harness import Pipeline, counter, eventually, free_port

OFFSET_KEY = b"__faust\x00offset__"  # where Faust keeps a partition's applied changelog offset
VISITORS = [f"visitor-{n}" for n in range(12)]


def _event(event_id: str, visitor: str, email: str | None = None) -> bytes:
    user: dict[str, Any] = {"anonymous_id": visitor}
    if email is not None:
        user["email"] = email
    return orjson.dumps({"eventn_ctx_event_id": event_id, "user": user})


def _partition_dbs(state: Path) -> dict[int, Path]:
    found = {}
    for path in state.rglob("*stitch-state-*.db"):
        found[int(path.name.removesuffix(".db").rpartition("-")[2])] = path
    return found


def test_state_ahead_of_its_changelog_or_unreadable_is_set_aside_and_restored(
    pipeline: Pipeline,
) -> None:
    sink = pipeline.reader(pipeline.settings.topics.sink)
    first = pipeline.worker("state")
    pipeline.produce(*(_event(f"{v}-early", v) for v in VISITORS))
    sink.wait_for(lambda m: len(m) >= len(VISITORS), timeout=90)
    assert first.stop() == 0, pipeline.logs()

    # the same volume, made untrustworthy: two partitions claim to have applied more of
    # the changelog than it holds (as after the broker lost it), two cannot be opened
    dbs = _partition_dbs(pipeline.tmp / "state")
    assert sorted(dbs) == [0, 1, 2, 3]
    for partition in (0, 1):
        store = RocksStore.open(dbs[partition])
        store.write([(OFFSET_KEY, b"1000000000")])
        store.close()
    for partition in (2, 3):
        (dbs[partition] / "CURRENT").write_text("MANIFEST-999999\n")

    port = free_port()
    pipeline.env["RETROSTITCH_STATUS_PORT"] = str(port)
    second = pipeline.worker("state")
    pipeline.produce(*(_event(f"{v}-login", v, email=f"{v}@x.com") for v in VISITORS))
    # every early event is amended: each partition's state came back from the changelog
    amended = {f"{v}-early" for v in VISITORS}

    def all_amended(messages: list[Any]) -> bool:
        records = [orjson.loads(m.value) for m in messages]
        done = {r["event_id"] for r in records if r["status"] == "amended"}
        return amended <= done

    sink.wait_for(all_amended, timeout=120)
    assert second.running, pipeline.logs()
    eventually(lambda: counter(port, "state_set_aside") == 4, 30, "4 partitions set aside")
    log = second.log_path.read_text()
    for partition in range(4):
        assert f"state of table stitch-state partition {partition} set aside" in log
    assert "ConsistencyError" not in log
    asides = sorted(p.name for p in (pipeline.tmp / "state").rglob("*.set-aside-*"))
    assert len(asides) == 4, asides
