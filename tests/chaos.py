"""Faults on purpose: workers and a connector killed at random, Postgres stopped, and the
warehouse compared with an oracle of its own.

    python -m tests.chaos --events 20000 --kills 12 --outage 20 --seed 3     (make chaos)

Two ``retrostitch worker`` processes and one ``retrostitch sink postgres`` run on the
local broker (or ``KAFKA_BOOTSTRAP_SERVERS``) against a throwaway PostgreSQL cluster of
their own. The events are fed in chunks; between chunks a random process gets SIGKILL and
is started again 1-2 s later, and once, mid-stream, PostgreSQL is stopped as by a crash
and started again after ``--outage`` seconds. Then the run waits until the warehouse
table holds every event, and compares it row by row with the oracle.

The oracle is this module's, not the stitcher's. Visitors are the devices of people (1 to
3 each, a person's email and user id their own); each visitor identifies at most once, with
its person's email, or with the email and the user id together. So every event of a visitor
that ever identifies must end with its identification's first value (the user id, else the
email) as its ``stitched_user_id``, whenever it came, and every event of the others with the
visitor's anonymous id; and every event of a person's identified devices must end with one
``person_id``: the user id's person where a device linked it, else the email's (the
others keep their anonymous id's own). Most identifications come in the last 30% of the
stream, after most faults, so the events they amend must have lived through them in state,
and the persons' merges through them in the person graph.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from connectors.postgres import PostgresSettings
from connectors.registry import SECTIONS
from streams.core.persons import identifier_id, person_id
from streams.dev.broker import configured_or_local
from streams.dev.local import WorkerProcess
from streams.ops.topics import produce_events
from streams.settings import Settings, load_settings
from tests.integration.conftest import make_pipeline
from tests.integration.postgres import Cluster, throwaway_cluster

SINK = [sys.executable, "-m", "streams.cli", "sink", "postgres"]


@dataclass(frozen=True, slots=True)
class Plan:
    events: int = 3_000
    kills: int = 6  # SIGKILLs of a random process, each restarted 1-2 s later
    outage: float = 8.0  # seconds PostgreSQL is down, once, mid-stream
    seed: int = 1
    partitions: int = 4
    chunks: int = 24  # the events go out in this many pieces, faults between them
    timeout: float = 150.0  # for the warehouse to hold every event after the last fault


@dataclass
class Report:
    plan: Plan
    kills: list[str] = field(default_factory=list)  # "worker-a at 12.3 s", ...
    outage_seconds: float = 0.0
    expected: int = 0
    matched: int = 0
    #: (event id, got, want): each a (stitched user id, person id)
    wrong: list[tuple[str, Any, Any]] = field(default_factory=list)
    missing: int = 0
    seconds: float = 0.0
    #: partitions a restarted worker found ahead of their changelog (none, on a broker whose
    #: end offsets it can trust): from its log
    set_aside: int = 0

    def lines(self) -> list[str]:
        plan = self.plan
        return [
            f"chaos: {plan.events:,} events, seed {plan.seed}, {plan.partitions} partitions,"
            f" 2 workers and a Postgres connector",
            f"  kills ({len(self.kills)}): {', '.join(self.kills) or 'none'}",
            f"  postgres down for {self.outage_seconds:.1f} s",
            f"  warehouse: {self.matched:,} of {self.expected:,} rows match the oracle;"
            f" {self.missing:,} missing, {len(self.wrong):,} wrong ({self.seconds:.0f} s in all)",
            f"  local state set aside on a restart: {self.set_aside} partitions",
        ]


def generate(plan: Plan) -> tuple[list[bytes], dict[str, tuple[str, str]]]:
    """The events in the order they are sent, and the oracle: each event's final
    ``stitched_user_id`` and ``person_id``."""
    rng = random.Random(plan.seed)
    visitors = [f"v{n}-{rng.randrange(10**6)}" for n in range(max(plan.events // 10, 1))]
    person_of: dict[str, int] = {}
    people = 0
    while len(person_of) < len(visitors):
        for visitor in visitors[len(person_of) : len(person_of) + rng.randint(1, 3)]:
            person_of[visitor] = people
        people += 1
    identified: dict[str, str] = {}  # visitor -> its stitched user id
    linked: set[int] = set()  # the people whose user id a device identified with
    lines: list[bytes] = []
    owner: dict[str, str] = {}
    for n in range(plan.events):
        visitor = rng.choice(visitors)
        person = person_of[visitor]
        user: dict[str, Any] = {"anonymous_id": visitor}
        # identifications come late, after most faults: every earlier event of the visitor
        # must have survived the kills and restores in state to be amended then
        late = n >= plan.events * 0.7
        if visitor not in identified and (rng.random() < 0.25 if late else rng.random() < 0.01):
            user["email"] = f"person{person}@example.com"
            identified[visitor] = user["email"]
            if rng.random() < 0.4:  # with the user id too: the person is the user id's
                identified[visitor] = user["id"] = f"user-{person}"
                linked.add(person)
        event_id = f"c{n}"
        owner[event_id] = visitor
        lines.append(orjson.dumps({"eventn_ctx_event_id": event_id, "user": user}))

    def expected(visitor: str) -> tuple[str, str]:
        person = person_of[visitor]
        if visitor not in identified:
            return visitor, identifier_id(visitor)
        if person in linked:
            return identified[visitor], person_id((0, f"user-{person}"))
        return identified[visitor], person_id((1, f"person{person}@example.com"))

    return lines, {event_id: expected(visitor) for event_id, visitor in owner.items()}


class Processes:
    """The two workers and the connector, by name, each restartable."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self._tmp = tmp
        self.procs: dict[str, WorkerProcess] = {
            "worker-a": self._worker(env, "a"),
            "worker-b": self._worker(env, "b"),
            "sink": WorkerProcess(env, tmp / "sink.log", command=SINK),
        }

    def _worker(self, env: dict[str, str], name: str) -> WorkerProcess:
        state = {**env, "RETROSTITCH_STATE_DIR": str(self._tmp / f"state-{name}")}
        return WorkerProcess(state, self._tmp / f"worker-{name}.log")

    def start(self) -> None:
        for process in self.procs.values():
            process.start()

    def kill(self, name: str) -> None:
        self.procs[name].stop(timeout=10, sig=signal.SIGKILL)

    def ensure_running(self) -> None:
        for process in self.procs.values():
            if not process.running:
                process.start()

    def stop(self) -> None:
        for process in self.procs.values():
            if process.running:
                process.stop(timeout=30)


def _pipeline(plan: Plan, bootstrap: str, dsn: str, tmp: Path) -> tuple[Settings, dict[str, str]]:
    """An isolated deployment (the integration tests' own), writing Postgres at ``dsn``."""
    pipeline = make_pipeline(bootstrap, tmp, partitions=plan.partitions)
    env = pipeline.env | {"RETROSTITCH_POSTGRES_DSN": dsn, "RETROSTITCH_POSTGRES_SCHEMA": "public"}
    return load_settings(environ=env, sections=SECTIONS), env


def _rows(settings: Settings) -> dict[str, Any]:
    postgres = settings.section(PostgresSettings)
    table = sql.Identifier(postgres.schema, settings.warehouse.table)
    query = sql.SQL("SELECT event_id, stitched_user_id, person_id FROM {}").format(table)
    try:
        with psycopg.connect(postgres.dsn, connect_timeout=5) as conn:
            return {
                event_id: (stitched, person) for event_id, stitched, person in conn.execute(query)
            }
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return {}


def run(
    plan: Plan, bootstrap: str, cluster: Cluster, tmp: Path, say: Callable[[str], None]
) -> Report:
    """One chaos run on the broker at ``bootstrap`` and the PostgreSQL ``cluster``."""
    rng = random.Random(plan.seed + 1)
    lines, oracle = generate(plan)
    report = Report(plan, expected=len(oracle))
    started = time.monotonic()
    size = -(-len(lines) // plan.chunks)
    kill_at = sorted(rng.sample(range(1, plan.chunks), min(plan.kills, plan.chunks - 1)))
    outage_at = plan.chunks // 2
    with ExitStack() as stack:
        settings, env = _pipeline(plan, bootstrap, cluster.dsn, tmp)
        processes = Processes(env, tmp)
        stack.callback(processes.stop)
        processes.start()
        for chunk in range(plan.chunks):
            part = lines[chunk * size : (chunk + 1) * size]
            produce_events(settings.kafka, settings.topics.input, part, settings.recognition)
            time.sleep(rng.uniform(0.3, 1.5))
            for _ in range(kill_at.count(chunk)):
                name = rng.choice(sorted(processes.procs))
                processes.kill(name)
                report.kills.append(f"{name} at {time.monotonic() - started:.1f} s")
                say(f"SIGKILL {name}")
                time.sleep(rng.uniform(1.0, 2.0))
                processes.ensure_running()
            if chunk == outage_at and plan.outage > 0:
                say(f"postgres stopped for {plan.outage:.1f} s")
                down = time.monotonic()
                cluster.stop()
                time.sleep(plan.outage)
                cluster.start()
                report.outage_seconds = time.monotonic() - down
        processes.ensure_running()
        deadline = time.monotonic() + plan.timeout
        rows = _rows(settings)
        while rows != oracle and time.monotonic() < deadline:
            processes.ensure_running()  # a process that died on its own is restarted too
            time.sleep(1.0)
            rows = _rows(settings)
    report.seconds = time.monotonic() - started
    report.set_aside = sum(
        path.read_text().count(" set aside (") for path in tmp.glob("worker-*.log")
    )
    report.matched = sum(rows.get(event_id) == want for event_id, want in oracle.items())
    report.missing = sum(event_id not in rows for event_id in oracle)
    report.wrong = [
        (event_id, rows[event_id], want)
        for event_id, want in oracle.items()
        if event_id in rows and rows[event_id] != want
    ]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds Postgres is down")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    plan = Plan(
        events=args.events, kills=args.kills, outage=args.outage, seed=args.seed,
        partitions=args.partitions, chunks=max(24, args.kills * 2), timeout=600.0,
    )  # fmt: skip
    with (
        configured_or_local() as bootstrap,
        throwaway_cluster() as cluster,
        tempfile.TemporaryDirectory(prefix="retrostitch-chaos-") as tmp,
    ):
        report = run(plan, bootstrap, cluster, Path(tmp), lambda text: print(text, flush=True))
    print("\n".join(report.lines()))
    sys.exit(0 if report.matched == report.expected else 1)


if __name__ == "__main__":
    main()
