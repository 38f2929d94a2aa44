"""A PostgreSQL server for the tests: the one configured, or a throwaway cluster.

``RETROSTITCH_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is
tried first. Where nothing answers there, a throwaway cluster is made from the local
PostgreSQL binaries (``initdb``, ``pg_ctl``) on a free loopback port; where there are no
binaries either, the run stops with a message that says how to get them. Never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
HOW_TO_GET_ONE = (
    "No PostgreSQL server answered at {dsn} and no PostgreSQL binaries (initdb, pg_ctl) were "
    "found to start a throwaway one. Install them (Debian: apt-get install postgresql) or set "
    "RETROSTITCH_POSTGRES_DSN to a server the tests may create schemas and databases on."
)


def _answers(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    dsn = os.environ.get("RETROSTITCH_POSTGRES_DSN", DEFAULT_DSN)
    if _answers(dsn):
        yield dsn
        return
    binaries = _binaries()
    if binaries is None:
        raise RuntimeError(HOW_TO_GET_ONE.format(dsn=dsn))
    with _throwaway_cluster(binaries) as throwaway:
        yield throwaway


@contextmanager
def _throwaway_cluster(binaries: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="retrostitch-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True)  # noqa: E731
    run(str(binaries / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    log = str(data / "server.log")  # the server must not hold our pipes open
    run(str(binaries / "pg_ctl"), "-D", str(data / "db"), "-l", log, "-o", options, "-w", "start")
    try:
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")
        yield f"postgresql://postgres@127.0.0.1:{port}/test"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)
