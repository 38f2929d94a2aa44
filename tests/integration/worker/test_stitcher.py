"""The stitcher end to end: real broker, real worker processes, real RocksDB state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.dev.reader import Message
from tests.integration.harness import Pipeline, identity_records, sink_events


def _event(event_id: str, anonymous_id: str = "1", email: str | None = None) -> bytes:
    user: dict[str, Any] = {"anonymous_id": anonymous_id}
    if email is not None:
        user["email"] = email
    return orjson.dumps({"eventn_ctx_event_id": event_id, "event_type": "pageview", "user": user})


def _latest(messages: Sequence[Message]) -> dict[str, dict[str, Any]]:
    """The warehouse view of the sink: the highest version of each event id."""
    latest: dict[str, dict[str, Any]] = {}
    for record in sink_events(m.value for m in messages):
        known = latest.get(record["event_id"])
        if known is None or record["version"] > known["version"]:
            latest[record["event_id"]] = record
    return latest


def _has(versions: dict[str, int]) -> Any:
    def check(messages: Sequence[Message]) -> bool:
        latest = _latest(messages)
        return all(e in latest and latest[e]["version"] >= v for e, v in versions.items())

    return check


def _emails(messages: Sequence[Message]) -> dict[str, str | None]:
    return {e: r["event"]["user"].get("email") for e, r in _latest(messages).items()}


SEED = [
    _event("event1"),
    _event("event2"),
    _event("event3", email="a@b.com"),
    _event("event4", email="a@b.com"),
]


def test_seed_example_amends_event1_and_event2(pipeline: Pipeline) -> None:
    pipeline.worker()
    sink = pipeline.reader(pipeline.settings.topics.sink)
    pipeline.produce(*SEED)

    sink.wait_for(_has({"event1": 2, "event2": 2, "event3": 1, "event4": 1}), timeout=90)

    assert _emails(sink.messages) == {
        e: "a@b.com" for e in ("event1", "event2", "event3", "event4")
    }
    latest = _latest(sink.messages)
    assert {e: r["stitched_user_id"] for e, r in latest.items()} == dict.fromkeys(latest, "a@b.com")
    assert {e: (r["version"], r["status"]) for e, r in latest.items()} == {
        "event1": (2, "amended"),
        "event2": (2, "amended"),
        "event3": (1, "identified"),
        "event4": (1, "identified"),
    }
    # before identification, event1 and event2 went out as they came, unamended
    first = [r for r in sink_events(m.value for m in sink.messages) if r["version"] == 1]
    assert {r["event_id"]: r["event"]["user"].get("email") for r in first}["event1"] is None


def test_malformed_records_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    pipeline: Pipeline,
) -> None:
    pipeline.worker()
    sink = pipeline.reader(pipeline.settings.topics.sink)
    dead = pipeline.reader(pipeline.settings.topics.dead_letter)
    broken = b'{"eventn_ctx_event_id": "broken", "user": {"anonymous_id": "1"'
    not_an_object = b'["an", "array"]'
    bad_event_id = b'{"eventn_ctx_event_id": {"nested": 1}, "user": {"anonymous_id": "1"}}'

    pipeline.produce(
        _event("before"), broken, not_an_object, bad_event_id, _event("after", email="a@b.com")
    )

    sink.wait_for(_has({"before": 2, "after": 1}), timeout=90)
    dead.wait_for(lambda messages: len(messages) >= 3, timeout=30)
    by_value = {m.value: m for m in dead.messages}
    assert set(by_value) == {broken, not_an_object, bad_event_id}
    reasons = {value: m.headers["retrostitch.reason"].decode() for value, m in by_value.items()}
    assert reasons[broken].startswith("not valid JSON")
    assert reasons[not_an_object] == "not a JSON object but a JSON list"
    assert (
        "event id at /eventn_ctx_event_id must be a string or an integer" in reasons[bad_event_id]
    )
    source = by_value[broken].headers["retrostitch.source"].decode()
    assert source.startswith(f"{pipeline.settings.topics.input}[")
    assert "]@" in source
    assert _emails(sink.messages) == {"before": "a@b.com", "after": "a@b.com"}


def _restart_amends_earlier_events(pipeline: Pipeline, second_state_dir: str) -> None:
    sink = pipeline.reader(pipeline.settings.topics.sink)
    first = pipeline.worker("state-1")
    pipeline.produce(SEED[0], SEED[1])
    sink.wait_for(_has({"event1": 1, "event2": 1}), timeout=90)
    assert first.stop() == 0, pipeline.logs()

    pipeline.worker(second_state_dir)
    pipeline.produce(SEED[2])

    sink.wait_for(_has({"event1": 2, "event2": 2, "event3": 1}), timeout=90)
    assert _emails(sink.messages) == dict.fromkeys(("event1", "event2", "event3"), "a@b.com")
    versions = sorted(
        (r["event_id"], r["version"]) for r in sink_events(m.value for m in sink.messages)
    )
    assert versions == [("event1", 1), ("event1", 2), ("event2", 1), ("event2", 2), ("event3", 1)]


def test_a_restarted_worker_still_amends_events_it_held_before(pipeline: Pipeline) -> None:
    _restart_amends_earlier_events(pipeline, second_state_dir="state-1")


def test_a_worker_with_empty_state_restores_it_from_the_changelog(pipeline: Pipeline) -> None:
    """A takeover on another machine: no local RocksDB, only the changelog topic."""
    _restart_amends_earlier_events(pipeline, second_state_dir="state-2")


def test_a_redelivered_event_yields_no_second_row(pipeline: Pipeline) -> None:
    pipeline.worker()
    sink = pipeline.reader(pipeline.settings.topics.sink)
    pipeline.produce(SEED[0], SEED[0], SEED[2], SEED[0], SEED[2])

    sink.wait_for(_has({"event1": 2, "event3": 1}), timeout=90)
    sink.poll(2.0)  # anything more would be a second row
    versions = sorted(
        (r["event_id"], r["version"]) for r in sink_events(m.value for m in sink.messages)
    )
    assert versions == [("event1", 1), ("event1", 2), ("event3", 1)]
    assert len(identity_records(m.value for m in sink.messages)) == 1  # one identification


def test_without_identity_records_the_worker_stitches_and_emits_no_mapping(
    pipeline: Pipeline,
) -> None:
    pipeline.env["RETROSTITCH_IDENTITY_RECORDS"] = "false"
    pipeline.worker()
    sink = pipeline.reader(pipeline.settings.topics.sink)
    pipeline.produce(*SEED)

    sink.wait_for(_has({"event1": 2, "event2": 2, "event3": 1, "event4": 1}), timeout=90)
    sink.poll(2.0)  # an identity record would follow the amendments
    assert _emails(sink.messages)["event1"] == "a@b.com"
    assert identity_records(m.value for m in sink.messages) == []


def test_an_input_keyed_by_anonymous_id_is_stitched_without_the_repartition_hop(
    pipeline: Pipeline,
) -> None:
    pipeline.env["RETROSTITCH_INPUT_KEYED_BY_ANONYMOUS_ID"] = "true"
    pipeline.worker()
    sink = pipeline.reader(pipeline.settings.topics.sink)
    dead = pipeline.reader(pipeline.settings.topics.dead_letter)
    misrouted = _event("misrouted")
    producer = Producer({"bootstrap.servers": pipeline.bootstrap_servers})
    producer.produce(pipeline.settings.topics.input, value=misrouted, key=b"not-the-id")
    producer.flush(10)
    pipeline.produce(*SEED, b"not json")

    sink.wait_for(_has({"event1": 2, "event2": 2, "event3": 1, "event4": 1}), timeout=90)
    assert _emails(sink.messages) == dict.fromkeys(
        ("event1", "event2", "event3", "event4"), "a@b.com"
    )
    dead.wait_for(lambda messages: len(messages) >= 2, timeout=30)
    reasons = {m.value: m.headers["retrostitch.reason"].decode() for m in dead.messages}
    assert reasons[misrouted].startswith("key b'not-the-id' is not the event's anonymous id '1'")
    assert reasons[b"not json"].startswith("not valid JSON")
    topics = AdminClient({"bootstrap.servers": pipeline.bootstrap_servers}).list_topics().topics
    assert f"{pipeline.settings.app_id}-by-anonymous-id" not in topics


def test_a_batch_the_worker_cannot_emit_stops_it_without_committing_past_the_batch(
    pipeline: Pipeline,
) -> None:
    """An agent that fails on a batch stops the worker loudly; the offsets of that batch are
    not committed, so whoever reads the partition next reads it again (an agent restarted
    in place would go on with later batches and commit past it)."""
    pipeline.env["RETROSTITCH_MAX_EVENT_BYTES"] = "0"  # no limit: the huge event gets through
    worker = pipeline.worker()
    sink = pipeline.reader(pipeline.settings.topics.sink)
    pipeline.produce(_event("before", anonymous_id="2"))
    sink.wait_for(_has({"before": 1}), timeout=90)
    # its sink record is over the producer's 1 MB message limit: the broker never gets it
    huge = orjson.dumps(
        {"eventn_ctx_event_id": "huge", "user": {"anonymous_id": "2"}, "pad": "x" * 1_200_000}
    )
    producer = Producer(
        {"bootstrap.servers": pipeline.bootstrap_servers, "message.max.bytes": 5_000_000}
    )
    producer.produce(pipeline.settings.topics.input, huge, b"2")
    assert producer.flush(30) == 0

    assert worker.wait(timeout=90) not in (None, 0), pipeline.logs()
    assert "did not take a record" in pipeline.logs()
    (record,) = [
        m
        for m in pipeline.reader(pipeline.settings.topics.input).wait_for(
            lambda messages: len(messages) >= 2, timeout=30
        )
        if m.value == huge
    ]
    consumer = Consumer(
        {"bootstrap.servers": pipeline.bootstrap_servers, "group.id": pipeline.settings.app_id}
    )
    try:
        tp = TopicPartition(pipeline.settings.topics.input, record.partition)
        (committed,) = consumer.committed([tp], timeout=10)
    finally:
        consumer.close()
    assert committed.offset <= record.offset  # read again by the next worker
