"""Stitcher throughput: one worker (ours or the naive baseline) over a fixed workload.

The workload is produced to a fresh input topic first (keyed by anonymous id), then one
worker is started on it. Events/s is the workload's event count divided by the time from
the first to the last record the worker wrote to the sink (record timestamps, set by the
worker's producer), so process start-up and the group join are not counted.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.dev.local import WorkerProcess
from streams.ops.topics import ensure_topics
from streams.settings import Settings, load_settings
from tests.bench.workload import Mix, events
from tests.integration.harness import FAST_GROUP

__all__ = ["Run", "environment", "produce_mix", "run_worker"]


@dataclass(frozen=True, slots=True)
class Run:
    events: int
    seconds: float
    peak_rss_bytes: int
    cpu_seconds: float  # the worker's, from its first sink record to its last
    state_dir: Path
    settings: Settings

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6


def environment(bootstrap_servers: str, partitions: int, **extra: str) -> dict[str, str]:
    name = f"b{uuid.uuid4().hex[:8]}"
    return {
        **FAST_GROUP,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "RETROSTITCH_APP_ID": name,
        "RETROSTITCH_INPUT_TOPIC": f"{name}.events",
        "RETROSTITCH_SINK_TOPIC": f"{name}.events.stitched",
        "RETROSTITCH_DEAD_LETTER_TOPIC": f"{name}.events.dlq",
        "RETROSTITCH_SINK_DEAD_LETTER_TOPIC": f"{name}.events.stitched.dlq",
        "RETROSTITCH_PARTITIONS": str(partitions),
        "RETROSTITCH_STATUS_PORT": "0",
        "RETROSTITCH_STANDBY_REPLICAS": "0",
        **extra,
    }


def produce_mix(settings: Settings, mix: Mix) -> int:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "linger.ms": 20,
            "partitioner": "murmur2_random",
        }
    )
    sent = 0
    for anonymous_id, value, _ in events(mix):
        while True:
            try:
                producer.produce(settings.topics.input, value=value, key=anonymous_id.encode())
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
    if producer.flush(60):
        raise RuntimeError("input records not acknowledged within 60 s")
    return sent


def run_worker(
    env: dict[str, str], mix: Mix, command: list[str], expected: int, workdir: Path,
    timeout: float = 900.0, settle: float = 0.0,
) -> Run:  # fmt: skip
    """Produce ``mix``, start ``command`` as the worker, wait for ``expected`` sink records
    (and, ``settle`` > 0, until the sink has been quiet that long: the persons agent's
    records come after the events')."""
    env = {**env, "RETROSTITCH_STATE_DIR": str(workdir / "state")}
    settings = load_settings(environ=env)
    ensure_topics(settings)
    produced = produce_mix(settings, mix)
    worker = WorkerProcess(env, workdir / "worker.log", command=command).start()
    try:
        first, last, cpu = _read_sink(settings, expected, timeout, worker)
        if settle > 0:
            _until_quiet(settings, settle)
        peak = worker.peak_rss()
    finally:
        code = worker.stop()
    if code != 0:
        print(f"worker exited {code}:\n{worker.log_tail()}", file=sys.stderr)
    state_dir = workdir / "state" / settings.app_id
    return Run(produced, (last - first) / 1000, peak, cpu, state_dir, settings)


#: the keys of sink records that are no event's (``streams.core.record``)
NOT_EVENTS = (b"identity:", b"person:", b"person_merge:")


def _read_sink(
    settings: Settings, expected: int, timeout: float, worker: WorkerProcess
) -> tuple[int, int, float]:
    """The first and last sink record timestamps (ms), and the worker's CPU seconds in
    between (polled finely until the first record, so that start-up is not counted)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "bench-reader",
            "enable.auto.commit": False,
        }
    )
    topic = settings.topics.sink
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.topics.partitions)]
    )
    first, last, count = 2**63, 0, 0
    cpu_at_first = 0.0
    deadline = time.monotonic() + timeout
    try:
        while count < expected:
            if time.monotonic() > deadline or not worker.running:
                raise RuntimeError(
                    f"{count} of {expected} sink records after {timeout}s\n{worker.log_tail()}"
                )
            messages = consumer.consume(10_000, timeout=0.5 if count else 0.005)
            if messages and not count:
                cpu_at_first = worker.cpu_seconds()
            for message in messages:
                if message.error() is not None or (message.key() or b"").startswith(NOT_EVENTS):
                    continue  # the mapping rows and persons records are not the events counted
                _, stamp = message.timestamp()
                first, last, count = min(first, stamp), max(last, stamp), count + 1
        cpu = worker.cpu_seconds() - cpu_at_first
    finally:
        consumer.close()
    return first, last, cpu


def _until_quiet(settings: Settings, seconds: float) -> None:
    """Wait until the sink topic's end offsets have not moved for ``seconds``."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "q"})
    try:
        partitions = [
            TopicPartition(settings.topics.sink, p) for p in range(settings.topics.partitions)
        ]
        ends, since = None, time.monotonic()
        while time.monotonic() - since < seconds:
            now = [consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in partitions]
            if now != ends:
                ends, since = now, time.monotonic()
            time.sleep(0.25)
    finally:
        consumer.close()


def ours() -> list[str]:
    """The worker; ``-P``: the working directory does not go before ``PYTHONPATH``, so that
    ``PYTHONPATH=<another checkout>`` (``tests.bench.ab``) runs that checkout's code."""
    return [sys.executable, "-P", "-m", "streams.cli", "worker"]


#: the Quix Streams peer's interpreter: a virtualenv of its own (``make bench`` makes it),
#: since Quix Streams pins an older confluent-kafka than the project's
QUIX_PYTHON = Path(__file__).parents[2] / ".venv-quix" / "bin" / "python"


def quix(design: str) -> list[str]:
    """The Quix Streams peer in one of its designs (``tests.bench.quix.DESIGNS``)."""
    if not QUIX_PYTHON.exists():
        raise RuntimeError(f"the Quix Streams peer runs in {QUIX_PYTHON.parents[1]}: make bench")
    return [str(QUIX_PYTHON), "-m", "tests.bench.quix", design]


def limit() -> list[str]:
    """The hand-written loop: what the libraries allow (``tests.bench.limit``)."""
    return [sys.executable, "-m", "tests.bench.limit"]


def naive() -> list[str]:
    return [sys.executable, "-m", "tests.bench.naive"]


if os.name != "posix":  # /proc is read for the peak RSS
    raise ImportError("the benchmark runs on Linux")
