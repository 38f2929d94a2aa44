"""A PostgreSQL server for the tests: the one configured, or a throwaway cluster.

``RETROSTITCH_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is
tried first. Where nothing answers there, a throwaway cluster is made from the local
PostgreSQL binaries (``initdb``, ``pg_ctl``) on a free loopback port; where there are no
binaries either, the run stops with a message that says how to get them. Never a skip.
"""

from __future__ import annotations

import contextlib
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
    with throwaway_cluster() as cluster:
        yield cluster.dsn


class Cluster:
    """A PostgreSQL cluster of its own, made by ``initdb`` in a temporary directory, on a
    free loopback port; it can be stopped (as a crash: ``-m immediate``) and started."""

    def __init__(self, binaries: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self._binaries = binaries
        self._data = Path(tempfile.mkdtemp(prefix="retrostitch-pg-"))
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self._data, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self._data / "db"), "-U", "postgres", "--auth=trust")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as_user, str(self._binaries / tool), *args]
        subprocess.run(command, check=True, capture_output=True)

    def start(self) -> Cluster:
        options = f"-p {self.port} -k {self._data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self._data / "server.log")  # the server must not hold our pipes open
        self._run("pg_ctl", "-D", str(self._data / "db"), "-l", log, "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self._data / "db"), "-m", "immediate", "stop")

    def remove(self) -> None:
        shutil.rmtree(self._data, ignore_errors=True)


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A started ``Cluster`` with a database ``test``; stopped and removed afterwards.
    RuntimeError, saying how to get them, where there are no PostgreSQL binaries."""
    binaries = _binaries()
    if binaries is None:
        raise RuntimeError(
            HOW_TO_GET_ONE.format(dsn=os.environ.get("RETROSTITCH_POSTGRES_DSN", DEFAULT_DSN))
        )
    cluster = Cluster(binaries).start()
    try:
        admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped already
            cluster.stop()
        cluster.remove()
