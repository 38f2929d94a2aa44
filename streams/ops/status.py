"""Each process's HTTP status endpoint, for Kubernetes probes and Prometheus.

    GET /healthz  200 while the process makes progress (liveness), else 503
    GET /readyz   200 while it holds its partitions and has restored them (readiness), else 503
    GET /metrics  Prometheus' text format: counters retrostitch_<name>_total, gauges
                  (some per partition, as labels) and histograms

It runs in a thread of its own, so a busy event loop cannot starve it; liveness is
therefore judged from a heartbeat the worker's loop (or the connector's) keeps fresh.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Heartbeat", "Histogram", "StatusServer", "labelled", "prometheus_text"]


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
    def __init__(
        self,
        port: int,
        *,
        live: Callable[[], bool],
        ready: Callable[[], bool],
        counters: Callable[[], Mapping[str, float]],
        gauges: Callable[[], Mapping[str, float]] = dict,
        histograms: Callable[[], Iterable[Histogram]] = tuple,
        host: str = "0.0.0.0",  # probes and scrapes come from outside the pod
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str]]] = {
            "/healthz": lambda: (200, "ok\n") if live() else (503, "stalled\n"),
            "/readyz": lambda: (200, "ready\n") if ready() else (503, "not ready\n"),
            "/metrics": lambda: (200, prometheus_text(counters(), gauges(), histograms())),
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


# -- `retrostitch status`: a running worker's /metrics, for a person ---------------------

Sample = tuple[str, dict[str, str], float]
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_SHOWN = (
    ("events", ("received", "emitted", "passthrough", "bots", "dead_lettered", "duplicates")),
    ("recognition", ("identified", "amended", "stitched", "anonymous", "conflicts")),
    ("bounds", ("held", "expired", "capped", "forgotten", "identities_expired")),
    ("merge limit", ("claimed", "quarantined", "refused_anonymous_ids")),
    ("commands", ("erased_anonymous_ids", "erased_events", "unmerged_anonymous_ids")),
)


def parse_metrics(text: str) -> list[Sample]:
    """(name without retrostitch_, labels, value) of each sample in Prometheus' text."""
    samples = []
    for line in text.splitlines():
        found = _SAMPLE.match(line.strip())
        if found is None or line.startswith("#"):
            continue
        labels = dict(_LABEL.findall(found["labels"] or ""))
        name = found["name"].removeprefix("retrostitch_")
        samples.append((name, labels, float(found["value"])))
    return samples


_SHOWN_SINK = (
    ("records", ("sink_records_read", "sink_rows_written", "sink_erasures")),
    ("trouble", ("sink_dead_lettered", "sink_warehouse_unavailable")),
)


def summary(source: str, samples: list[Sample], now: float) -> str:
    """A terminal summary of one process's metrics: a worker's, or a connector's."""
    plain = {name: value for name, labels, value in samples if not labels}
    if "sink_records_read_total" in plain:
        return _sink_summary(source, samples, plain)
    lines = [f"worker {source}"]
    for title, names in _SHOWN:
        shown = [f"{n.replace('_', ' ')} {plain.get(f'{n}_total', 0):,.0f}" for n in names]
        lines.append(f"  {title + ':':13} " + ", ".join(shown))
    last = plain.get("last_identification_timestamp_seconds")
    ago = "none since the worker started" if last is None else f"{now - last:,.0f} s ago"
    lines.append(f"  {'last identification:':13} {ago}")
    count, total = plain.get("batch_seconds_count", 0), plain.get("batch_seconds_sum", 0.0)
    if count:
        lines.append(f"  {'batches:':13} {count:,.0f}, {total / count * 1000:,.1f} ms on average")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for name, labels, value in samples:
        if name == "consumer_lag":
            rows.setdefault((labels["topic"], labels["partition"]), {})["lag"] = value
        elif name in ("state_keys", "state_bytes"):
            table = labels.get("table", "state")
            rows.setdefault((f"table {table}", labels["partition"]), {})[name] = value
    if rows:
        lines.append(f"  {'topic':40} {'partition':>9} {'lag':>10} {'keys':>12} {'MiB':>9}")
    for (topic, partition), row in sorted(rows.items(), key=lambda r: (r[0][0], int(r[0][1]))):
        lag = f"{row['lag']:,.0f}" if "lag" in row else ""
        keys = f"{row['state_keys']:,.0f}" if "state_keys" in row else ""
        size = f"{row['state_bytes'] / 2**20:,.1f}" if "state_bytes" in row else ""
        lines.append(f"  {topic:40} {partition:>9} {lag:>10} {keys:>12} {size:>9}")
    return "\n".join(lines)


def _sink_summary(source: str, samples: list[Sample], plain: dict[str, float]) -> str:
    lines = [f"connector {source}"]
    for title, names in _SHOWN_SINK:
        shown = [
            f"{n.removeprefix('sink_').replace('_', ' ')} {plain.get(f'{n}_total', 0):,.0f}"
            for n in names
        ]
        lines.append(f"  {title + ':':13} " + ", ".join(shown))
    count = plain.get("sink_write_seconds_count", 0)
    if count:
        average = plain.get("sink_write_seconds_sum", 0.0) / count * 1000
        lines.append(f"  {'writes:':13} {count:,.0f}, {average:,.1f} ms on average")
    lags = sorted(
        ((labels["topic"], int(labels["partition"])), value)
        for name, labels, value in samples
        if name == "sink_consumer_lag"
    )
    if lags:
        lines.append(f"  {'topic':40} {'partition':>9} {'lag':>10}")
    for (topic, partition), lag in lags:
        lines.append(f"  {topic:40} {partition:>9} {lag:>10,.0f}")
    return "\n".join(lines)
