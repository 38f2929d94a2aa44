"""Amend latency: from an identifying event being produced to its amended rows being
queryable in the warehouse, at a steady offered load.

The whole pipeline runs as in production: a worker process, the Postgres connector as a
process, and the ClickHouse connector in this process (chdb admits one process per
directory, so its rows are read through the connector's own client). Events of mix a's
shape (10 per anonymous id, 30% of the ids identify at their 6th) are produced at a fixed
rate; a poller reads, every ``POLL`` seconds, which anonymous ids have all 5 of their
amended rows in each warehouse. Latency = first poll that sees them - produce time, so
its resolution is ``POLL``. The worker alone: from the produce time to the timestamp of
the last of its 5 amended records on the sink topic (the worker's producer stamps it).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from psycopg import sql

from connectors.clickhouse.warehouse import ClickHouseWarehouse
from connectors.postgres import PostgresSettings
from connectors.registry import SECTIONS
from connectors.runner import BatchingSink
from streams.dev.local import WorkerProcess
from streams.ops.topics import ensure_topics
from streams.settings import Settings, load_settings
from tests.bench.workload import Mix, events

__all__ = ["LATENCY_MIX", "Latencies", "amend_latency"]

POLL = float(os.environ.get("BENCH_POLL", "0.1"))
LATENCY_MIX = Mix("l", ids=15_000, events_per_id=10, identify_share=0.3, identify_at=5)


@dataclass(frozen=True, slots=True)
class Latencies:
    identifications: int
    postgres: list[float]
    clickhouse: list[float]
    worker: list[float]  # to the last amended record on the sink topic

    @staticmethod
    def percentiles(values: list[float]) -> dict[str, float]:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def amend_latency(env: dict[str, str], workdir: Path, rate: int = 5000) -> Latencies:
    env = {
        # chdb opens one directory per process: a caller running this more than once in a
        # process passes one directory (and a table per run) in ``env``
        "RETROSTITCH_CLICKHOUSE_URL": f"chdb://{workdir / 'clickhouse'}",
        **env,
        **{k: v for k, v in os.environ.items() if k.startswith("RETROSTITCH_SINK_")},
        "RETROSTITCH_STATE_DIR": str(workdir / "state"),
    }
    settings = load_settings(environ=env, sections=SECTIONS)
    ensure_topics(settings)
    python = [sys.executable, "-m", "streams.cli"]
    worker = WorkerProcess(env, workdir / "worker.log", command=[*python, "worker"]).start()
    postgres_sink = WorkerProcess(
        env, workdir / "sink-postgres.log", command=[*python, "sink", "postgres"]
    ).start()
    clickhouse = ClickHouseWarehouse(settings)
    sink = BatchingSink(settings, clickhouse, f"{settings.app_id}-sink-clickhouse")
    stop = threading.Event()
    sink_thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    sink_thread.start()
    try:
        _wait_until_flowing(settings, clickhouse)
        produced: dict[str, float] = {}
        seen_pg: dict[str, float] = {}
        seen_ch: dict[str, float] = {}
        done = threading.Event()
        poller = threading.Thread(
            target=_poll, args=(settings, clickhouse, produced, seen_pg, seen_ch, done), daemon=True
        )
        poller.start()
        _produce_paced(settings, rate, produced)
        deadline = time.monotonic() + 120
        while not (set(produced) <= set(seen_pg) and set(produced) <= set(seen_ch)):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"after 120 s, {len(set(produced) - set(seen_pg))} identifications missing "
                    f"in Postgres, {len(set(produced) - set(seen_ch))} in ClickHouse"
                )
            time.sleep(0.2)
        done.set()
        poller.join(10)
    finally:
        stop.set()
        sink_thread.join(60)
        postgres_sink.stop()
        worker.stop()
    amended = _amended_on_sink(settings, set(produced))
    return Latencies(
        len(produced),
        [seen_pg[a] - t for a, t in produced.items()],
        [seen_ch[a] - t for a, t in produced.items()],
        [amended[a] - t for a, t in produced.items()],
    )


def _amended_on_sink(settings: Settings, identified: set[str]) -> dict[str, float]:
    """Per identified anonymous id, the timestamp (s) of the last of its amended records on
    the sink topic; read until each has all of them."""
    held = LATENCY_MIX.identify_at
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                         "group.id": "bench-latency", "enable.auto.commit": False})  # fmt: skip
    partitions = range(settings.topics.partitions)
    consumer.assign([TopicPartition(settings.topics.sink, p, OFFSET_BEGINNING) for p in partitions])
    count: dict[str, int] = {}
    last: dict[str, float] = {}
    deadline = time.monotonic() + 120
    try:
        while any(count.get(a, 0) < held for a in identified):
            if time.monotonic() > deadline:
                raise RuntimeError("amended records missing on the sink topic after 120 s")
            for message in consumer.consume(10_000, timeout=0.5):
                value = message.value()
                if message.error() is not None or value is None or b'"amended"' not in value:
                    continue
                anonymous_id = orjson.loads(value)["anonymous_id"]
                count[anonymous_id] = count.get(anonymous_id, 0) + 1
                stamp = message.timestamp()[1] / 1000
                last[anonymous_id] = max(last.get(anonymous_id, 0.0), stamp)
    finally:
        consumer.close()
    return last


def _wait_until_flowing(settings: Settings, clickhouse: ClickHouseWarehouse) -> None:
    """Send one identified event and wait for it in both warehouses: groups have joined."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    event = b'{"eventn_ctx_event_id": "warm-up", "user": {"anonymous_id": "warm-up"}}'
    producer.produce(settings.topics.input, event, b"warm-up")
    producer.flush(10)
    deadline = time.monotonic() + 90
    while not (_postgres_has(settings, "warm-up") and _clickhouse_has(clickhouse, "warm-up")):
        if time.monotonic() > deadline:
            raise RuntimeError("the pipeline did not deliver a first event within 90 s")
        time.sleep(0.2)


def _postgres_has(settings: Settings, event_id: str) -> bool:
    try:
        with psycopg.connect(settings.section(PostgresSettings).dsn, autocommit=True) as conn:
            return bool(
                conn.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE event_id = %s").format(_pg_table(settings)),
                    (event_id,),
                ).fetchall()
            )
    except psycopg.errors.UndefinedTable:
        return False


def _clickhouse_has(clickhouse: ClickHouseWarehouse, event_id: str) -> bool:
    if clickhouse.schema is None:
        return False
    rows = clickhouse.query(
        f"SELECT 1 FROM {clickhouse.table} WHERE event_id = {{e:String}}", {"e": event_id}
    )
    return bool(rows)


def _pg_table(settings: Settings) -> sql.Identifier:
    return sql.Identifier(settings.section(PostgresSettings).schema, settings.warehouse.table)


def _produce_paced(settings: Settings, rate: int, produced: dict[str, float]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
        }
    )
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    start = time.monotonic()
    for n, (anonymous_id, value, identifies) in enumerate(events(LATENCY_MIX, seed=11)):
        if n % per_tick == 0:
            ahead = start + (n // per_tick) * tick - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            producer.poll(0)
        producer.produce(settings.topics.input, value, anonymous_id.encode())
        if identifies:
            produced[anonymous_id] = time.time()
    producer.flush(30)


def _poll(
    settings: Settings,
    clickhouse: ClickHouseWarehouse,
    produced: dict[str, float],
    seen_pg: dict[str, float],
    seen_ch: dict[str, float],
    done: threading.Event,
) -> None:
    """Note when each produced identification's amended rows are all visible. Queries ask
    only for identifications still pending, by an indexed column, on one thread: the
    measurement must not load the machine it measures."""
    held = LATENCY_MIX.identify_at
    pg_query = sql.SQL(
        "SELECT anonymous_id FROM {} WHERE anonymous_id = ANY(%s) AND status = 'amended'"
        " GROUP BY anonymous_id HAVING count(*) >= %s"
    ).format(_pg_table(settings))
    ch_query = (
        f"SELECT anonymous_id FROM {clickhouse.table}"
        " WHERE anonymous_id IN {pending:Array(String)} AND status = 'amended'"
        f" GROUP BY anonymous_id HAVING uniqExact(event_id) >= {held} SETTINGS max_threads = 1"
    )
    with psycopg.connect(settings.section(PostgresSettings).dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS bench_by_anonymous_id ON {} (anonymous_id)").format(
                _pg_table(settings)
            )
        )
        while not done.wait(POLL):
            # a row a query sees was committed before the query began: note that moment
            pending = [a for a in list(produced) if a not in seen_pg]
            moment = time.time()
            for (anonymous_id,) in conn.execute(pg_query, (pending, held)).fetchall():
                seen_pg.setdefault(anonymous_id, moment)
            pending = [a for a in list(produced) if a not in seen_ch]
            moment = time.time()
            for anonymous_id, *_ in clickhouse.query(ch_query, {"pending": pending}):
                seen_ch.setdefault(anonymous_id, moment)
