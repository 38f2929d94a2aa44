"""Each process's HTTP status endpoint, for Kubernetes probes and Prometheus.

    GET /healthz  200 while the process makes progress (liveness), else 503
    GET /readyz   200 while it holds its partitions and has restored them (readiness), else 503
    GET /metrics  counters in Prometheus' text format: retrostitch_<name>_total

It runs in a thread of its own, so a busy event loop cannot starve it; liveness is
therefore judged from a heartbeat the worker's loop (or the connector's) keeps fresh.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Heartbeat", "StatusServer", "prometheus_text"]


class Heartbeat:
    """Beaten by the work loop; stale after ``timeout`` seconds without a beat."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def fresh(self) -> bool:
        return time.monotonic() - self._last < self.timeout


def prometheus_text(counters: Mapping[str, float], gauges: Mapping[str, float]) -> str:
    lines = []
    for name, value in sorted(counters.items()):
        metric = f"retrostitch_{_name(name)}_total"
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    for name, value in sorted(gauges.items()):
        metric = f"retrostitch_{_name(name)}"
        lines += [f"# TYPE {metric} gauge", f"{metric} {value}"]
    return "\n".join(lines) + "\n"


def _name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


class StatusServer:
    def __init__(
        self,
        port: int,
        *,
        live: Callable[[], bool],
        ready: Callable[[], bool],
        counters: Callable[[], Mapping[str, float]],
        gauges: Callable[[], Mapping[str, float]] = dict,
        host: str = "0.0.0.0",  # probes and scrapes come from outside the pod
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str]]] = {
            "/healthz": lambda: (200, "ok\n") if live() else (503, "stalled\n"),
            "/readyz": lambda: (200, "ready\n") if ready() else (503, "not ready\n"),
            "/metrics": lambda: (200, prometheus_text(counters(), gauges())),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                status, body = route() if route else (404, "not found\n")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> StatusServer:
        threading.Thread(target=self._server.serve_forever, name="status", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
