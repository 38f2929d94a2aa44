"""``retrostitch demo`` (``make run``): the whole job on the embedded defaults.

Starts the local broker and a worker, feeds the sample stream (the seed's example and a
second visitor), and prints the sink as a warehouse would show it: the latest version of
each event, before and after the visitors identify themselves.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import orjson

from streams.broker import LocalBroker
from streams.kafka import Message, TopicReader, ensure_topics, produce_events
from streams.local import WorkerProcess, expected_versions
from streams.settings import Settings

__all__ = ["run_demo"]

_SAMPLES = resources.files("streams") / "samples"


def run_demo(settings: Settings, config: Path | None = None) -> int:
    rules = settings.recognition
    before = (_SAMPLES / "before.jsonl").read_bytes().splitlines()
    identify = (_SAMPLES / "identify.jsonl").read_bytes().splitlines()
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="retrostitch-demo-") as tmp:
        print(f"local broker on {broker.bootstrap_servers}")
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "RETROSTITCH_STATE_DIR": str(Path(tmp) / "state"),
            "KAFKA_SESSION_TIMEOUT_SECONDS": "3",
            "KAFKA_HEARTBEAT_INTERVAL_SECONDS": "1",
        }
        topics = settings.topics
        local = Settings(
            recognition=rules, topics=topics,
            kafka=type(settings.kafka)(bootstrap_servers=broker.bootstrap_servers),
        )  # fmt: skip
        ensure_topics(local)
        log = Path(tmp) / "worker.log"
        with WorkerProcess(env, log, config) as worker:
            sink = TopicReader(broker.bootstrap_servers, topics.sink)
            started = time.monotonic()
            produce_events(broker.bootstrap_servers, topics.input, before, rules)
            _wait(sink, expected_versions(before, rules), worker)
            print(f"\nSink after the anonymous events ({time.monotonic() - started:.1f}s):")
            _print_table(sink.messages, settings)
            produce_events(broker.bootstrap_servers, topics.input, identify, rules)
            _wait(sink, expected_versions(before + identify, rules), worker)
            print("\nSink after identification (event1 and event2 amended, version 2):")
            _print_table(sink.messages, settings)
            dead = TopicReader(broker.bootstrap_servers, topics.dead_letter)
            dead.poll(1.0)
            print(f"\nDead letters on {topics.dead_letter}:")
            for message in dead.messages:
                reason = message.headers.get("retrostitch.reason", b"").decode()
                source = message.headers.get("retrostitch.source", b"").decode()
                print(f"  {source}: {reason}\n    {message.value!r}")
            sink.close()
            dead.close()
    return 0


def _wait(sink: TopicReader, expected: dict[str, int], worker: WorkerProcess) -> None:
    def complete(messages: Sequence[Message]) -> bool:
        if not worker.running:
            raise RuntimeError(f"the worker stopped:\n{worker.log_tail()}")
        seen: dict[str, int] = {}
        for message in messages:
            record = orjson.loads(message.value or b"{}")
            seen[record["event_id"]] = max(seen.get(record["event_id"], 0), record["version"])
        return all(seen.get(event_id, 0) >= v for event_id, v in expected.items())

    sink.wait_for(lambda messages: complete(messages), timeout=90)


def _print_table(messages: Sequence[Message], settings: Settings) -> None:
    latest: dict[str, dict[str, object]] = {}
    for message in messages:
        record = orjson.loads(message.value or b"{}")
        if record["version"] >= latest.get(record["event_id"], {}).get("version", 0):
            latest[record["event_id"]] = record
    nodes = settings.recognition.identification
    header = [
        "event_id",
        "anonymous_id",
        *(p.column for p in nodes),
        "stitched_user_id",
        "version",
        "status",
    ]
    rows = [
        [
            _cell(r["event_id"]), _cell(r["anonymous_id"]),
            *(_cell(p.get(r["event"])) for p in nodes),
            _cell(r["stitched_user_id"]), _cell(r["version"]), _cell(r["status"]),
        ]
        for r in sorted(latest.values(), key=lambda r: str(r["event_id"]))
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, [("-" * w) for w in widths], *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    return "" if value is None else str(value)
