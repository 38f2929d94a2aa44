"""``make bench``: every benchmark figure in one table, also written as JSON.

    python -m tests.bench [--runs N] [--only stitcher,persons,latency,connectors,state]

Runs on the local broker (or ``KAFKA_BOOTSTRAP_SERVERS``), the embedded ClickHouse
(chdb) and the Postgres of the tests (``RETROSTITCH_POSTGRES_DSN`` or a throwaway
cluster). Throughput and latency figures are the median of ``--runs`` runs (each latency
run: 4,500 identifications); the state size comes from one deterministic run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from connectors.base import Warehouse
from connectors.clickhouse import ClickHouseSettings
from connectors.clickhouse.warehouse import ClickHouseWarehouse
from connectors.mysql import MySQLSettings
from connectors.mysql.warehouse import MySQLWarehouse, connection_options, quoted
from connectors.postgres import PostgresSettings
from connectors.postgres.warehouse import PostgresWarehouse
from streams.cli import tune_gc_for_streaming
from streams.core.record import Status
from streams.dev.broker import configured_or_local
from streams.ops.topics import ensure_topics
from streams.settings import Settings, WarehouseSettings, load_settings
from tests.bench import connectors, latency, stitcher
from tests.bench.state import graph_size, state_size
from tests.bench.workload import MIXES, Mix, events
from tests.integration.mysql import mysql_server
from tests.integration.postgres import postgres_server

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 8
KEYED = {"RETROSTITCH_INPUT_KEYED_BY_ANONYMOUS_ID": "true"}
WAITING = Mix("w", ids=1_000, events_per_id=100, identify_share=0.0, identify_at=100)
SECTIONS = ("stitcher", "persons", "latency", "connectors", "state")
PERSONS = {True: {"USER_RECOGNITION_PERSONS": "true"}, False: {"USER_RECOGNITION_PERSONS": "false"}}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    args = parser.parse_args()
    only = set(args.only.split(","))
    tune_gc_for_streaming()  # connectors run in this process, as in ``retrostitch sink``
    results: dict[str, Any] = {"machine": _machine(), "runs": args.runs}
    with (
        postgres_server() as dsn,
        mysql_server() as mysql_dsn,
        tempfile.TemporaryDirectory(prefix="retrostitch-bench-") as tmp,
    ):
        work = _Workdirs(Path(tmp))
        if "stitcher" in only:
            results["stitcher"] = _stitcher(work, args.runs)
        if "persons" in only:
            results["persons"] = _persons(work, args.runs)
        if "latency" in only:
            results["latency"] = _latency(dsn, work, args.runs)
        if "connectors" in only:
            with configured_or_local() as bootstrap:
                results["connectors"] = _connectors(bootstrap, dsn, mysql_dsn, work, args.runs)
        if "state" in only:
            with configured_or_local() as bootstrap:
                results["state"] = _state(bootstrap, work)
    path = _write(results)
    print(table(results))
    print(f"\n(written to {path})")


class _Workdirs:
    def __init__(self, root: Path) -> None:
        self.root = root
        #: chdb opens one directory per process: every run here shares it, a table each
        self.clickhouse = f"chdb://{root / 'clickhouse'}"

    def new(self, name: str) -> Path:
        path = self.root / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        return path


def _expected_sink_records(mix: Mix) -> int:
    """Every event once, plus one amended record per event released by an identification."""
    return mix.total + mix.identifying_ids * min(mix.identify_at, mix.events_per_id)


def _stitcher(work: _Workdirs, runs: int) -> dict[str, Any]:
    """Each run on a broker of its own: the local one keeps every topic in memory, and the
    naive baseline's changelog grows to gigabytes."""
    variants: dict[str, tuple[Callable[[], list[str]], dict[str, str]]] = {
        "ours": (stitcher.ours, KEYED),
        "ours_repartition": (stitcher.ours, {}),
        "quix_keys": (lambda: stitcher.quix("keys"), KEYED),
        "quix_lists": (lambda: stitcher.quix("lists"), KEYED),
        "limit": (stitcher.limit, KEYED),
        "naive": (stitcher.naive, {}),
    }
    out: dict[str, Any] = {}
    for mix in (MIXES["a"], MIXES["b"]):
        for name, (command, extra) in variants.items():
            done = []
            for run in range(runs):
                workdir = work.new(f"{name}-{mix.name}-{run}")
                with configured_or_local() as bootstrap:
                    env = stitcher.environment(bootstrap, PARTITIONS, **extra)
                    result = stitcher.run_worker(
                        env, mix, command(), _expected_sink_records(mix), workdir
                    )
                done.append(result)
                _say(
                    f"stitcher {name} mix {mix.name} run {run + 1}: {result.rate:,.0f} events/s, "
                    f"{result.cpu_us_per_event:.1f} µs CPU per event"
                )
            out[f"{name}_{mix.name}"] = {
                "events": done[0].events,
                "events_per_second": [r.rate for r in done],
                "median_events_per_second": statistics.median(r.rate for r in done),
                "cpu_us_per_event": [r.cpu_us_per_event for r in done],
                "median_cpu_us_per_event": statistics.median(r.cpu_us_per_event for r in done),
                "peak_rss_bytes": [r.peak_rss_bytes for r in done],
            }
    return out


def _persons(work: _Workdirs, runs: int) -> dict[str, Any]:
    """The worker (keyed input) with persons on and off, alternating, on mix a and on mix p
    (people on 1 to 4 devices); and the person graph's bytes per value after mix p. The
    rate counts events; the persons agent's work, in the same process, costs CPU beside."""
    out: dict[str, Any] = {}
    for mix in (MIXES["a"], MIXES["p"]):
        found: dict[bool, list[stitcher.Run]] = {True: [], False: []}
        for run in range(runs):
            for persons in (True, False):
                workdir = work.new(f"persons-{persons}-{mix.name}-{run}")
                with configured_or_local() as bootstrap:
                    env = stitcher.environment(bootstrap, PARTITIONS, **KEYED, **PERSONS[persons])
                    result = stitcher.run_worker(
                        env, mix, stitcher.ours(), _expected_sink_records(mix), workdir,
                        settle=3.0 if persons and mix.people and run == 0 else 0.0,
                    )  # fmt: skip
                found[persons].append(result)
                _say(
                    f"persons {'on' if persons else 'off'} mix {mix.name} run {run + 1}: "
                    f"{result.rate:,.0f} events/s, {result.cpu_us_per_event:.1f} µs CPU per event"
                )
        for persons, done in found.items():
            out[f"{'on' if persons else 'off'}_{mix.name}"] = {
                "events_per_second": [r.rate for r in done],
                "median_events_per_second": statistics.median(r.rate for r in done),
                "cpu_us_per_event": [r.cpu_us_per_event for r in done],
                "median_cpu_us_per_event": statistics.median(r.cpu_us_per_event for r in done),
            }
        if mix.people:
            size = graph_size(found[True][0].state_dir)
            out["graph_bytes_per_value"] = size.bytes_per_value
            out["graph_values"] = size.values
            _say(f"person graph: {size.values:,} values, {size.bytes_per_value:.0f} bytes each")
    return out


def _latency(dsn: str, work: _Workdirs, runs: int) -> dict[str, Any]:
    """Each run on a broker and a Postgres schema of its own; the median of each percentile."""
    found: dict[str, list[dict[str, float]]] = {"postgres": [], "clickhouse": [], "worker": []}
    identifications = 0
    for run in range(runs):
        with configured_or_local() as bootstrap:
            env = stitcher.environment(
                bootstrap, PARTITIONS, **KEYED, RETROSTITCH_POSTGRES_DSN=dsn,
                RETROSTITCH_POSTGRES_SCHEMA=f"bench_{uuid.uuid4().hex[:8]}",
                RETROSTITCH_CLICKHOUSE_URL=work.clickhouse,
                RETROSTITCH_WAREHOUSE_TABLE=f"bench_{uuid.uuid4().hex[:8]}",
            )  # fmt: skip
            try:
                measured = latency.amend_latency(env, work.new(f"latency-{run}"))
            finally:
                _drop_schema(dsn, env["RETROSTITCH_POSTGRES_SCHEMA"])
        identifications = measured.identifications
        found["postgres"].append(measured.percentiles(measured.postgres))
        found["clickhouse"].append(measured.percentiles(measured.clickhouse))
        found["worker"].append(measured.percentiles(measured.worker))
        p99 = found["postgres"][-1]["p99"], found["clickhouse"][-1]["p99"]
        _say(f"amend latency run {run + 1}: p99 {p99[0]:.2f} s Postgres, {p99[1]:.2f} s ClickHouse")
    return {
        "offered_events_per_second": 5000,
        "identifications": identifications,
        "poll_seconds": latency.POLL,
        **{
            name: {cut: statistics.median(r[cut] for r in rows) for cut in ("p50", "p95", "p99")}
            for name, rows in found.items()
        },
        "runs": found,
    }


def _connectors(
    bootstrap: str, dsn: str, mysql_dsn: str, work: _Workdirs, runs: int
) -> dict[str, Any]:
    count = 100_000
    workloads = {
        "": connectors.sink_records(count),
        "_persons": connectors.person_sink_records(count),  # mix p, persons on
    }
    out: dict[str, Any] = {}
    makers: dict[str, Callable[[Any], Warehouse]] = {
        "clickhouse": ClickHouseWarehouse,
        "postgres": PostgresWarehouse,
        "mysql": MySQLWarehouse,
    }
    for (name, make), (variant, records) in itertools.product(makers.items(), workloads.items()):
        rates = []
        for run in range(runs):
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            settings = load_settings(environ=stitcher.environment(bootstrap, PARTITIONS))
            settings = (
                replace(
                    settings, warehouse=WarehouseSettings(table=f"bench_{uuid.uuid4().hex[:8]}")
                )
                .with_section(PostgresSettings(dsn, schema))
                .with_section(ClickHouseSettings(url=work.clickhouse))
                .with_section(MySQLSettings(mysql_dsn))
            )
            ensure_topics(settings)
            connectors.produce_sink_records(settings, records)
            try:
                rates.append(connectors.throughput(settings, make(settings), count))
            finally:
                if name == "postgres":
                    _drop_schema(dsn, schema)
                if name == "mysql":
                    _drop_mysql_table(settings)
            _say(f"connector {name}{variant} run {run + 1}: {rates[-1]:,.0f} records/s")
        out[f"{name}{variant}"] = {
            "rows": count,
            "person_merges": sum(r.status is Status.PERSON_MERGE for r in records),
            "rows_per_second": rates,
            "median_rows_per_second": statistics.median(rates),
        }
    return out


def _drop_mysql_table(settings: Settings) -> None:
    options = connection_options(settings.section(MySQLSettings).dsn)
    table = settings.warehouse.table
    with pymysql.connect(**options, autocommit=True) as conn, conn.cursor() as cursor:
        for suffix in ("", "_identities", "_persons", "_person_merges", "_persons_lock"):
            cursor.execute(f"DROP TABLE IF EXISTS {quoted(table + suffix)}")


def _state(bootstrap: str, work: _Workdirs) -> dict[str, Any]:
    env = stitcher.environment(bootstrap, PARTITIONS, **KEYED)
    run = stitcher.run_worker(env, WAITING, stitcher.ours(), WAITING.total, work.new("state"))
    size = state_size(run.state_dir)
    _say(f"state: {size.bytes_per_waiting_event:.0f} bytes per waiting event")
    return {
        "waiting_events": size.waiting_events,
        "keys": size.keys,
        "sst_bytes": size.sst_bytes,
        "bytes_per_waiting_event": size.bytes_per_waiting_event,
        "mean_event_bytes": _mean_event_bytes(WAITING),
        "peak_rss_bytes": run.peak_rss_bytes,
    }


def _mean_event_bytes(mix: Mix) -> float:
    sizes = [len(value) for _, value, _ in events(mix)]
    return sum(sizes) / len(sizes)


def table(results: dict[str, Any]) -> str:
    """The results as docs/performance.md shows them."""
    machine = results["machine"]
    lines = [
        f"retrostitch bench: commit {machine['commit']}, {machine['cores']} cores, "
        f"Python {machine['python']}, {machine['when']}; each figure the median of "
        f"{results['runs']} run(s)",
        "",
        f"{'figure':<52} {'measured':>22} {'target':>16}",
        "-" * 92,
    ]

    def row(name: str, measured: str, target: str = "") -> None:
        lines.append(f"{name:<52} {measured:>22} {target:>16}")

    if "stitcher" in results:
        s = results["stitcher"]
        for mix, target in (("a", 3), ("b", 10)):

            def rate(name: str, mix: str = mix) -> float:
                return float(s[f"{name}_{mix}"]["median_events_per_second"])

            def cpu(name: str, mix: str = mix) -> float:
                return float(s[f"{name}_{mix}"]["median_cpu_us_per_event"])

            def rss(name: str, mix: str = mix) -> float:
                return max(s[f"{name}_{mix}"]["peak_rss_bytes"]) / 2**20

            # the peer to beat: the faster of the Quix Streams designs on this mix
            best = max(("quix_keys", "quix_lists"), key=rate)
            ours, peer = rate("ours"), rate(best)
            label = {"a": "a: 100k events, 10k ids, 30% identify",
                     "b": "b: 101k events, 1k ids, 100 waiting each"}[mix]  # fmt: skip
            row(f"stitcher mix {label}", "")
            row("  retrostitch, input keyed by anonymous id", f"{ours:,.0f} ev/s")
            row("  retrostitch, repartitioned", f"{rate('ours_repartition'):,.0f} ev/s")
            row("  Quix Streams, a key per item (keyed input)", f"{rate('quix_keys'):,.0f} ev/s")
            row("  Quix Streams, lists per id (keyed input)", f"{rate('quix_lists'):,.0f} ev/s")
            row("  the limit: a hand-written loop", f"{rate('limit'):,.0f} ev/s")
            row("  naive Faust baseline", f"{rate('naive'):,.0f} ev/s")
            row(f"  ours / best peer ({best.removeprefix('quix_')}), keyed", f"{ours / peer:.2f}x",
                ">= 2x")  # fmt: skip
            row("  ours / best peer, repartitioned", f"{rate('ours_repartition') / peer:.2f}x",
                ">= 1.5x")  # fmt: skip
            row("  ours / the limit", f"{ours / rate('limit'):.0%}",
                ">= 40%" if mix == "a" else "")  # fmt: skip
            row("  ours / naive", f"{ours / rate('naive'):.1f}x", f">= {target}x")
            row("  CPU per event (ours keyed / best peer / limit)",
                f"{cpu('ours'):.1f} / {cpu(best):.1f} / {cpu('limit'):.1f} µs",
                "<= peer / 2")  # fmt: skip
            row("  peak RSS of the worker (ours / best peer / naive)",
                f"{rss('ours'):.0f} / {rss(best):.0f} / {rss('naive'):.0f} MiB")  # fmt: skip
    if "persons" in results:
        pe = results["persons"]
        row("persons on / off (keyed input, alternating)", "")
        for mix, label in (("a", "mix a"), ("p", "mix p: people on 1-4 devices")):
            on, off = pe[f"on_{mix}"], pe[f"off_{mix}"]
            rate_on, rate_off = on["median_events_per_second"], off["median_events_per_second"]
            row(f"  {label}", f"{rate_on:,.0f} / {rate_off:,.0f} ev/s")
            row("    on / off", f"{rate_on / rate_off:.2f}x", ">= 0.85x")
            cpu_on, cpu_off = on["median_cpu_us_per_event"], off["median_cpu_us_per_event"]
            row("    CPU per event, on / off", f"{cpu_on:.1f} / {cpu_off:.1f} µs")
        if "graph_bytes_per_value" in pe:
            row(f"  person graph after mix p ({pe['graph_values']:,} values)",
                f"{pe['graph_bytes_per_value']:.0f} bytes/value")  # fmt: skip
    if "latency" in results:
        lat = results["latency"]
        row(
            f"amend latency at {lat['offered_events_per_second']:,} ev/s offered "
            f"({lat['identifications']:,} identifications)",
            "p50 / p95 / p99",
        )
        for name, target in (("worker", "p99 < 0.5 s"), ("postgres", "p99 < 2 s"),
                             ("clickhouse", "p99 < 2 s")):  # fmt: skip
            if name not in lat:
                continue  # results written before the worker's own figure was measured
            p = lat[name]
            label = "  worker alone (to the sink topic)" if name == "worker" else f"  {name}"
            row(label, f"{p['p50']:.2f} / {p['p95']:.2f} / {p['p99']:.2f} s", target)
    if "connectors" in results:
        c = results["connectors"]
        row("connector, 100k sink records", "")
        row("  clickhouse (chdb)", f"{c['clickhouse']['median_rows_per_second']:,.0f} rows/s",
            ">= 100,000")  # fmt: skip
        row("  postgres", f"{c['postgres']['median_rows_per_second']:,.0f} rows/s", ">= 50,000")
        if "mysql" in c:
            row("  mysql (mariadb)", f"{c['mysql']['median_rows_per_second']:,.0f} rows/s",
                ">= 30,000")  # fmt: skip
        if "postgres_persons" in c:
            merges = c["postgres_persons"]["person_merges"]
            row(f"connector, 100k sink records of mix p, persons ({merges:,} merges)", "")
            for name in ("clickhouse", "postgres", "mysql"):
                rate = c[f"{name}_persons"]["median_rows_per_second"]
                row(f"  {name}", f"{rate:,.0f} records/s")
    if "state" in results:
        st = results["state"]
        row(
            f"state per waiting event ({st['mean_event_bytes']:.0f}-byte events, "
            f"{st['waiting_events']:,} waiting)",
            f"{st['bytes_per_waiting_event']:.0f} bytes",
            "<= 200 bytes",
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "commit": (commit or "unknown") + ("+changes" if dirty else ""),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _write(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    machine = results["machine"]
    path = RESULTS / f"{machine['when'].replace(':', '')}-{machine['commit']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    return path


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


if __name__ == "__main__":
    main()
