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


def _row(output: str, title: str, event_id: str) -> dict[str, str]:
    """The cells of one row of the table printed under ``title``, by column (a table's
    columns are left-aligned under its header, blank cells included)."""
    table = output.split(title, 1)[1].split("\n\n", 1)[0]
    header, _, *rows = [line for line in table.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    [line] = [line for line in rows if line.split()[:1] == [event_id]]
    bounds = [*starts[1:], len(line) + 1]
    return {n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)}


def test_the_demo_shows_the_seeds_rows_amended(postgres_dsn: str) -> None:
    output = _demo(postgres_dsn)
    for title in ("ClickHouse `default`.`events_latest`", "Postgres retrostitch_demo.events"):
        before, after = f"{title}, before identification:", f"{title}, after identification:"
        assert _row(output, before, "event1")["status"] == "anonymous"
        event1 = _row(output, after, "event1")
        assert (event1["user_email"], event1["stitched_user_id"]) == ("a@b.com", "a@b.com")
        assert (event1["version"], event1["status"]) == ("2", "amended")
        # Kim's phone (her email only) is a person of its own until visitor-2, her laptop,
        # signs up with a user id and that email: then both devices' rows show one person
        assert _row(output, before, "k-e1")["person"] != _row(output, before, "v2-e1")["person"]
        assert _row(output, after, "k-e1")["person"] == _row(output, after, "v2-e1")["person"]
    assert "the user mapping table" in output
    assert "not valid JSON" in output  # the dead letters, with their reasons


def test_the_snowplow_demo_shows_the_latest_user_id_on_every_row(postgres_dsn: str) -> None:
    output = _demo(postgres_dsn, "--snowplow")
    for title in ("ClickHouse `default`.`events_latest`", "Postgres retrostitch_demo.events"):
        after = f"{title}, after identification:"
        # an event that carried user-a: its user_id stays, its stitched user id follows user-b
        web4, web1, app1 = (_row(output, after, e) for e in ("web-4", "web-1", "app-1"))
        assert (web4["user_id"], web4["stitched_user_id"]) == ("user-a", "user-b")
        assert (web4["version"], web4["status"]) == ("2", "amended")
        assert (web1["stitched_user_id"], web1["version"], web1["status"]) == (
            "user-b",
            "3",
            "amended",
        )
        assert (app1["stitched_user_id"], app1["version"], app1["status"]) == (
            "user-c",
            "2",
            "amended",
        )
    assert "131 tab-separated fields; this line has 1" in output
