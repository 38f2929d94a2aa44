"""Each process's HTTP status endpoint, for Kubernetes probes and Prometheus.

    GET /healthz  200 while the process makes progress (liveness), else 503
    GET /readyz   200 while it holds its partitions and has restored them (readiness), else 503
    GET /metrics  Prometheus' text format: counters retrostitch_<name>_total, gauges
                  (some per partition, as labels) and histograms

It runs in a thread of its own, so a busy event loop cannot starve it; liveness is
therefore judged from a heartbeat the worker's loop (or the connector's) keeps fresh.
"""

from __future__ import annotations

import errno
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streams.core.errors import ConfigError

__all__ = [
    "DEFAULT_PORTS",
    "Heartbeat",
    "Histogram",
    "StatusServer",
    "labelled",
    "port_of",
    "prometheus_text",
]

#: the worker's and the replay's status port where ``stitcher.status_port`` is not set; a
#: connector's is its warehouse's (``connectors.registry``), each different from these
DEFAULT_PORTS = {
    "worker": 8080,
    "replay": 8083,
}


def port_of(default: int, configured: int | None) -> int:
    """A process's status port: the configured one, else its kind's ``default``."""
    return default if configured is None else configured


class Heartbeat:
    """Beaten by the work loop; stale after ``timeout`` seconds without a beat."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def fresh(self) -> bool:
        return time.monotonic() - self._last < self.timeout


class Histogram:
    """A Prometheus histogram of durations in seconds (cumulative buckets, sum, count)."""

    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets = [0] * len(self.BOUNDS)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        for i, bound in enumerate(self.BOUNDS):
            if seconds <= bound:
                self.buckets[i] += 1

    def lines(self) -> list[str]:
        metric = f"retrostitch_{_name(self.name)}"
        lines = [f"# TYPE {metric} histogram"]
        lines += [
            f'{metric}_bucket{{le="{bound}"}} {n}'
            for bound, n in zip(self.BOUNDS, self.buckets, strict=True)
        ]
        lines += [
            f'{metric}_bucket{{le="+Inf"}} {self.count}',
            f"{metric}_sum {self.sum}",
            f"{metric}_count {self.count}",
        ]
        return lines


def prometheus_text(
    counters: Mapping[str, float],
    gauges: Mapping[str, float],
    histograms: Iterable[Histogram] = (),
) -> str:
    """Prometheus' text format. A name may carry labels, ``lag{partition="3"}``: samples
    of one name share one TYPE line."""
    lines: list[str] = []
    for values, kind, suffix in ((counters, "counter", "_total"), (gauges, "gauge", "")):
        typed: set[str] = set()
        for name, value in sorted(values.items()):
            base, brace, labels = name.partition("{")
            metric = f"retrostitch_{_name(base)}{suffix}"
            if metric not in typed:
                typed.add(metric)
                lines.append(f"# TYPE {metric} {kind}")
            lines.append(f"{metric}{brace}{labels} {value}")
    for histogram in histograms:
        lines += histogram.lines()
    return "\n".join(lines) + "\n"


def labelled(name: str, **labels: object) -> str:
    """``name{key="value",…}``, values escaped as Prometheus wants them."""
    pairs = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return f"{name}{{{pairs}}}"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


class StatusServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``port``, from a thread of its own.

    The port is taken when the server is made, before the process does anything else, so
    that a port in use fails at once, with a ``ConfigError`` naming the setting; ``start``
    then serves answers computed from its callables whenever they are asked for.
    """

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:  # probes come from outside
        routes: dict[str, Callable[[], tuple[int, str]]] = {}
        self._routes = routes
        #: POST /query: a read-only statement's rows, for clients on this host only
        queries: dict[str, Callable[[str], tuple[int, str]]] = {}
        self._queries = queries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                answer = queries.get(self.path.split("?")[0])
                if answer is None:
                    status, body = 404, "not found\n"
                elif self.client_address[0] not in ("127.0.0.1", "::1"):
                    status, body = 403, "queries are answered on this host only\n"
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    status, body = answer(self.rfile.read(length).decode(errors="replace"))
                self._reply(status, body)

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                status, body = route() if route else (404, "not found\n")
                self._reply(status, body)

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the logs

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"status port {port} is in use (another process on this host?): set "
                "stitcher.status_port (RETROSTITCH_STATUS_PORT) to a free port, or 0 for none"
            ) from exc
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(
        self,
        *,
        live: Callable[[], bool],
        ready: Callable[[], bool],
        counters: Callable[[], Mapping[str, float]],
        gauges: Callable[[], Mapping[str, float]] = dict,
        histograms: Callable[[], Iterable[Histogram]] = tuple,
        query: Callable[[str], tuple[int, str]] | None = None,
    ) -> StatusServer:
        """Serve: liveness, readiness and the metrics, each read when asked for; with
        ``query``, ``POST /query`` (a statement in the body) from this host."""
        if query is not None:
            self._queries["/query"] = query
        self._routes.update(
            {
                "/healthz": lambda: (200, "ok\n") if live() else (503, "stalled\n"),
                "/readyz": lambda: (200, "ready\n") if ready() else (503, "not ready\n"),
                "/metrics": lambda: (200, prometheus_text(counters(), gauges(), histograms())),
            }
        )
        threading.Thread(target=self._server.serve_forever, name="status", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
