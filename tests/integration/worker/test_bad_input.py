"""10,000 malformed records among good ones, on the real broker: the worker never stops,
every bad record is a dead letter with its reason, every good one lands."""

from __future__ import annotations

from collections import Counter

from confluent_kafka import Producer

from streams.core.record import HEADER_REASON, HEADER_SOURCE, HEADER_TRUNCATED
from tests.badinput import HUGE, oracle, stream
from tests.integration.harness import Pipeline, sink_events

BAD, GOOD = 10_000, 2_000


def test_ten_thousand_malformed_records_are_dead_letters_and_the_good_ones_land(
    pipeline: Pipeline,
) -> None:
    records = stream(seed=12, bad=BAD, good=GOOD)
    latest, dead = oracle(records, pipeline.settings.recognition)
    sink = pipeline.reader(pipeline.settings.topics.sink)
    letters = pipeline.reader(pipeline.settings.topics.dead_letter)
    worker = pipeline.worker()
    producer = Producer(
        {"bootstrap.servers": pipeline.bootstrap_servers, "message.max.bytes": 10_000_000}
    )
    for key, value in records:
        producer.produce(pipeline.settings.topics.input, key=key, value=value)
        producer.poll(0)
    assert producer.flush(60) == 0

    letters.wait_for(lambda m: len(m) >= len(dead), timeout=240)

    def landed(messages: list[object]) -> bool:
        versions: dict[str, int] = {}
        for record in sink_events(m.value for m in sink.messages):
            event_id = record["event_id"]
            versions[event_id] = max(versions.get(event_id, 0), record["version"])
        return versions == latest

    sink.wait_for(landed, timeout=240)
    letters.poll(2.0)
    assert worker.running, worker.log_tail()
    assert len(letters.messages) == len(dead)
    assert all(
        m.headers.get(HEADER_REASON) and m.headers.get(HEADER_SOURCE) for m in letters.messages
    )
    limit = pipeline.settings.recognition.max_event_bytes or 0
    expected = Counter(value[:limit] for value in dead)
    assert Counter(m.value or b"" for m in letters.messages) == expected
    cut = [m for m in letters.messages if HEADER_TRUNCATED in m.headers]
    assert len(cut) == HUGE
    assert all(int(m.headers[HEADER_TRUNCATED]) > 2_000_000 for m in cut)
    reasons = Counter(m.headers[HEADER_REASON].decode().split(":")[0] for m in letters.messages)
    assert len(reasons) > 5, reasons  # every kind says what was wrong with it
