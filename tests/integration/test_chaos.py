"""Random SIGKILLs of both workers and the connector, and a PostgreSQL crash: the
warehouse ends equal to the generator's own oracle (``tests.chaos``; ``make chaos`` runs
a longer one)."""

from __future__ import annotations

from pathlib import Path

from tests.chaos import Plan, run
from tests.integration.postgres import throwaway_cluster


def test_random_kills_and_a_postgres_crash_lose_nothing(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    plan = Plan(events=3_000, kills=6, outage=8.0, seed=5)
    said: list[str] = []
    with throwaway_cluster() as cluster:
        report = run(plan, bootstrap_servers, cluster, tmp_path, said.append)
    summary = "\n".join([*report.lines(), *said, *map(str, report.wrong[:10])])
    assert len(report.kills) == plan.kills, summary
    assert report.outage_seconds >= plan.outage, summary
    assert (report.matched, report.missing, report.wrong) == (report.expected, 0, []), summary
    assert report.set_aside == 0, summary  # restarts restore from trusted local state
