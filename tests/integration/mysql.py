"""A MySQL or MariaDB server for the tests: the one configured, or a throwaway one.

``RETROSTITCH_MYSQL_DSN`` (default ``mysql://root@127.0.0.1:3306/test``) is tried first.
Where nothing answers there, a throwaway MariaDB is made from the local binaries
(``mariadb-install-db``, ``mariadbd``) on a free loopback port; where there are none
either, the run stops with a message that says how to get them. Never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql

from connectors.mysql.warehouse import connection_options

DEFAULT_DSN = "mysql://root@127.0.0.1:3306/test"
HOW_TO_GET_ONE = (
    "No MySQL or MariaDB server answered at {dsn} and no MariaDB binaries (mariadb-install-db,"
    " mariadbd) were found to start a throwaway one. Install them (Debian: apt-get install"
    " mariadb-server) or set RETROSTITCH_MYSQL_DSN to a server the tests may create"
    " databases on."
)


def _answers(dsn: str) -> bool:
    try:
        pymysql.connect(**connection_options(dsn), connect_timeout=3).close()
    except pymysql.MySQLError:
        return False
    return True


@contextmanager
def mysql_server() -> Iterator[str]:
    dsn = os.environ.get("RETROSTITCH_MYSQL_DSN", DEFAULT_DSN)
    if _answers(dsn):
        yield dsn
        return
    server, install = (
        shutil.which("mariadbd", path="/usr/sbin:/usr/bin"),
        shutil.which("mariadb-install-db"),
    )
    if server is None or install is None:
        raise RuntimeError(HOW_TO_GET_ONE.format(dsn=dsn))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="retrostitch-mariadb-"))
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(data, "mysql")
    subprocess.run(
        [install, f"--datadir={data / 'db'}", "--auth-root-authentication-method=normal", *user],
        check=True, capture_output=True,
    )  # fmt: skip
    process = subprocess.Popen(
        [server, f"--datadir={data / 'db'}", f"--port={port}", "--bind-address=127.0.0.1",
         f"--socket={data / 'sock'}", "--skip-grant-tables", *user],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    throwaway = f"mysql://root@127.0.0.1:{port}/test"
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"mysql://root@127.0.0.1:{port}/mysql"):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the throwaway MariaDB in {data} did not start")
            time.sleep(0.5)
        admin = pymysql.connect(host="127.0.0.1", port=port, user="root")
        admin.cursor().execute("CREATE DATABASE IF NOT EXISTS test")
        admin.close()
        yield throwaway
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(data, ignore_errors=True)
