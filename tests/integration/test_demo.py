"""``make run`` (``retrostitch demo``) and its Snowplow flavour, as a newcomer runs them: the
local broker, a worker and both connectors, the warehouse rows printed before and after."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def _demo(postgres_dsn: str, *arguments: str) -> str:
    env = {**os.environ, "RETROSTITCH_POSTGRES_DSN": postgres_dsn}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", *arguments],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _row(output: str, title: str, event_id: str) -> list[str]:
    """The cells of one row of the table printed under ``title``."""
    table = output.split(title, 1)[1].split("\n\n", 1)[0]
    [line] = [line for line in table.splitlines() if line.split()[:1] == [event_id]]
    return re.split(r"\s{2,}", line.strip())


def test_the_demo_shows_the_seeds_rows_amended(postgres_dsn: str) -> None:
    output = _demo(postgres_dsn)
    for title in ("ClickHouse `default`.`events_latest`", "Postgres retrostitch_demo.events"):
        assert _row(output, f"{title}, before identification:", "event1")[-1] == "anonymous"
        after = _row(output, f"{title}, after identification:", "event1")
        assert after[-4:] == ["a@b.com", "a@b.com", "2", "amended"]
    assert "the user mapping table" in output
    assert "not valid JSON" in output  # the dead letters, with their reasons


def test_the_snowplow_demo_shows_the_latest_user_id_on_every_row(postgres_dsn: str) -> None:
    output = _demo(postgres_dsn, "--snowplow")
    for title in ("ClickHouse `default`.`events_latest`", "Postgres retrostitch_demo.events"):
        after = f"{title}, after identification:"
        # an event that carried user-a: its user_id stays, its stitched user id follows user-b
        assert _row(output, after, "web-4")[2:] == ["user-a", "user-b", "2", "amended"]
        assert _row(output, after, "web-1")[2:] == ["user-b", "3", "amended"]
        assert _row(output, after, "app-1")[2:] == ["user-c", "2", "amended"]
    assert "131 tab-separated fields; this line has 1" in output
