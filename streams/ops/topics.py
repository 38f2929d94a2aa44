"""Topic administration with plain Kafka clients (confluent-kafka), for what is not the
Faust worker's job: creating the topics, feeding a file of events, sending a command to
every partition of the control topic, reading the erasures it holds, and reading where
partitions end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.core.control import Command, Erasures, encode, parse_command
from streams.core.errors import BadRecord, BrokerError, ConfigError
from streams.core.inputs import InputFormat, as_json
from streams.core.merges import answers_topic, claims_topic
from streams.core.persons import persons_topic
from streams.core.rules import RecognitionRules, parse
from streams.settings import KafkaSettings, Settings

__all__ = ["end_offsets", "ensure_topics", "erasures_so_far", "produce_events", "send_command"]


def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> list[str]:
    """Create the input, sink, control, quarantine and both dead-letter topics where
    missing, the merge limit's claims and answers topics, and the persons topic where
    persons are on; return those created.

    With ``topics.input_keyed_by_anonymous_id``, an existing input topic must have
    ``topics.partitions`` partitions (ConfigError otherwise).

    The repartition and changelog topics are Faust's own and made by the worker.
    """
    admin = AdminClient(settings.kafka.client_config())
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerError(
            f"cannot list topics on {settings.kafka.bootstrap_servers}: {exc}"
        ) from exc
    topics = settings.topics
    found = existing.get(topics.input)
    keyed = topics.input_keyed_by_anonymous_id
    if keyed and found is not None and len(found.partitions) != topics.partitions:
        raise ConfigError(
            f"topics.input_keyed_by_anonymous_id: the input topic {topics.input!r} has "
            f"{len(found.partitions)} partitions and topics.partitions is "
            f"{topics.partitions}; they must be equal (the state table is partitioned "
            "like the input), or turn the setting off to repartition"
        )
    wanted = [
        topics.input,
        topics.sink,
        topics.dead_letter,
        topics.control,
        topics.quarantine,
        settings.warehouse.dead_letter_topic,
    ]
    if settings.merges.max_anonymous_ids is not None:  # co-partitioned with the state
        wanted += [claims_topic(settings.app_id), answers_topic(settings.app_id)]
    if settings.persons.enabled:
        wanted.append(persons_topic(settings.app_id))
    missing = [name for name in dict.fromkeys(wanted) if name not in existing]
    if not missing:
        return []
    # the control topic keeps its commands for ever: a worker reads every erasure there
    # before it reads an event, so that no replay brings back what was erased
    kept = {topics.control: {"retention.ms": "-1"}}
    futures = admin.create_topics(
        [
            NewTopic(name, topics.partitions, settings.kafka.replication_factor,
                     config=kept.get(name, {}))
            for name in missing
        ],
        request_timeout=timeout,
    )  # fmt: skip
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name!r}: {exc}") from exc
    return missing


def produce_events(
    kafka: KafkaSettings,
    topic: str,
    lines: Iterable[bytes],
    rules: RecognitionRules,
    timestamp_ms: int = 0,
    input_format: InputFormat = InputFormat.JSON,
) -> int:
    """Send each line as one record, keyed by its anonymous id where it has one (read from
    the line as ``input_format`` says), with ``timestamp_ms`` as the records' timestamp
    (0: now).

    Lines are sent byte for byte, so a malformed one reaches the worker (and its dead-letter
    topic) as it would from a real producer.
    """
    producer = Producer({**kafka.client_config(), "linger.ms": 5})
    sent = 0
    for line in lines:
        value = line.rstrip(b"\r\n")
        if not value.strip():
            continue
        try:  # the same reading of an event as the worker's
            anonymous_id = parse(as_json(value, input_format), rules).anonymous_id
        except BadRecord:
            anonymous_id = None
        key = anonymous_id.encode() if anonymous_id is not None else None
        producer.produce(topic, value=value, key=key, timestamp=timestamp_ms)
        producer.poll(0)
        sent += 1
    remaining = producer.flush(30)
    if remaining:
        raise BrokerError(f"{remaining} records to {topic!r} were not acknowledged within 30 s")
    return sent


def send_command(settings: Settings, command: Command) -> int:
    """Send ``command`` to every partition of the control topic (each worker applies it
    to the state of its partitions); return how many partitions it went to."""
    admin = AdminClient(settings.kafka.client_config())
    topic = settings.topics.control
    try:
        found = admin.list_topics(topic, timeout=30).topics.get(topic)
    except KafkaException as exc:
        raise BrokerError(f"cannot read topic {topic!r}: {exc}") from exc
    if found is None or found.error is not None or not found.partitions:
        raise BrokerError(f"the control topic {topic!r} does not exist: start a worker first")
    producer = Producer({**settings.kafka.client_config(), "acks": "all"})
    value = encode(command)
    for partition in found.partitions:
        producer.produce(topic, value=value, partition=partition)
    if producer.flush(30):
        raise BrokerError(f"the command to {topic!r} was not acknowledged within 30 s")
    return len(found.partitions)


def erasures_so_far(settings: Settings, *, timeout: float = 120.0) -> Erasures:
    """Every erasure the control topic holds, read to its end: a worker knows them all
    before it reads an event, so that a replay never emits what was erased before it
    (``streams.core.control``). The topic holds commands only: it is read in moments."""
    erasures = Erasures()
    topic = settings.topics.control
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"{settings.app_id}-erasures",  # never joined: assign only
            "enable.auto.commit": False,
        }
    )
    try:
        found = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if found is None or found.error is not None:
            return erasures
        ends = end_offsets(consumer, topic, sorted(found.partitions))
        left = {partition: end for partition, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in left])
        deadline = time.monotonic() + timeout
        while left:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the control topic {topic!r} not read to its end in {timeout:.0f} s"
                )
            for message in consumer.consume(1000, timeout=0.5):
                partition, offset = message.partition(), message.offset()
                if message.error() is not None or partition is None or offset is None:
                    continue
                with contextlib.suppress(BadRecord):  # the worker dead-letters it
                    erasures.add(parse_command(message.value()), max(message.timestamp()[1], 0))
                if offset + 1 >= left.get(partition, 0):
                    left.pop(partition, None)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the control topic {topic!r}: {exc}") from exc
    finally:
        consumer.close()
    return erasures


def end_offsets(consumer: Consumer, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The offset after the last record of each partition, read rather than trusted.

    Some brokers (the local one among them) answer ListOffsets(latest) with the start of a
    partition's last batch + 1. So read on from there to the real end: with a broker that
    answers right there is nothing to read, and this costs one short poll.
    """
    ends: dict[int, int] = {}
    start: list[TopicPartition] = []
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        ends[partition] = high
        if high > low:
            start.append(TopicPartition(topic, partition, high - 1))
    if start:
        consumer.assign(start)
        while batch := consumer.consume(1000, timeout=0.5):
            for message in batch:
                where, offset = message.partition(), message.offset()
                if message.error() is None and where is not None and offset is not None:
                    ends[where] = max(ends[where], offset + 1)
        consumer.unassign()
    return ends
