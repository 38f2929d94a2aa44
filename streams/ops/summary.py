"""``retrostitch status``: a running process's /metrics, for a person.

    worker http://127.0.0.1:8080
      events:       received 4, emitted 5, passthrough 0, bots 0, dead lettered 0, ...
      recognition:  identified 1, amended 2, stitched 0, anonymous 2, conflicts 0
      ...
      topic                                    partition        lag         keys       MiB
      events                                           0          0

What each kind of process shows is a ``Shown``: its counters dataclass (whose sections
``streams.ops.counters`` reads), its histogram and its lag gauge. The worker's is
``streams.worker.metrics.SHOWN``, the connectors' ``connectors.runner.SHOWN``; a process is
of the kind whose every counter it serves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

from streams.ops.counters import sections

__all__ = ["Sample", "Shown", "parse_metrics", "summary"]

#: (name without ``retrostitch_``, labels, value)
Sample = tuple[str, dict[str, str], float]
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Shown:
    """What ``retrostitch status`` shows of one kind of process."""

    kind: str  # "worker", "connector"
    counters: type  # its counters dataclass
    histogram: tuple[str, str]  # (title, histogram name): count and average
    lag: str  # the gauge of consumer lag per topic and partition
    prefix: str = ""  # of its counters' names on /metrics
    #: (title, gauge) of a Unix time shown as "… s ago", if the kind has one
    last: tuple[str, str] | None = None
    state: bool = False  # also shows the state_keys and state_bytes gauges per partition


def parse_metrics(text: str) -> list[Sample]:
    """Each sample of Prometheus' text format."""
    samples = []
    for line in text.splitlines():
        found = _SAMPLE.match(line.strip())
        if found is None or line.startswith("#"):
            continue
        labels = dict(_LABEL.findall(found["labels"] or ""))
        name = found["name"].removeprefix("retrostitch_")
        samples.append((name, labels, float(found["value"])))
    return samples


def summary(source: str, samples: list[Sample], now: float, kinds: Sequence[Shown]) -> str:
    """A terminal summary of one process's metrics, as the first of ``kinds`` whose every
    counter the process serves (else the last of them)."""
    plain = {name: value for name, labels, value in samples if not labels}
    shown = next((kind for kind in kinds if _serves(plain, kind)), kinds[-1])
    lines = [f"{shown.kind} {source}"]
    for title, names in sections(shown.counters):
        counts = [
            f"{n.replace('_', ' ')} {plain.get(f'{shown.prefix}{n}_total', 0):,.0f}" for n in names
        ]
        lines.append(f"  {title + ':':13} " + ", ".join(counts))
    if shown.last is not None:
        title, gauge = shown.last
        last = plain.get(gauge)
        ago = "none since the worker started" if last is None else f"{now - last:,.0f} s ago"
        lines.append(f"  {title + ':':13} {ago}")
    title, histogram = shown.histogram
    count, total = plain.get(f"{histogram}_count", 0), plain.get(f"{histogram}_sum", 0.0)
    if count:
        lines.append(f"  {title + ':':13} {count:,.0f}, {total / count * 1000:,.1f} ms on average")
    return "\n".join(lines + _partitions(samples, shown))


def _serves(plain: dict[str, float], shown: Shown) -> bool:
    return all(f"{shown.prefix}{item.name}_total" in plain for item in fields(shown.counters))


def _partitions(samples: list[Sample], shown: Shown) -> list[str]:
    """One line per topic (or table) partition: lag, and state size where shown."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for name, labels, value in samples:
        if name == shown.lag:
            rows.setdefault((labels["topic"], labels["partition"]), {})["lag"] = value
        elif shown.state and name in ("state_keys", "state_bytes"):
            table = labels.get("table", "state")
            rows.setdefault((f"table {table}", labels["partition"]), {})[name] = value
    if not rows:
        return []
    state = f" {'keys':>12} {'MiB':>9}" if shown.state else ""
    lines = [f"  {'topic':40} {'partition':>9} {'lag':>10}{state}"]
    for (topic, partition), row in sorted(rows.items(), key=lambda r: (r[0][0], int(r[0][1]))):
        lag = f"{row['lag']:,.0f}" if "lag" in row else ""
        line = f"  {topic:40} {partition:>9} {lag:>10}"
        if shown.state:
            keys = f"{row['state_keys']:,.0f}" if "state_keys" in row else ""
            size = f"{row['state_bytes'] / 2**20:,.1f}" if "state_bytes" in row else ""
            line += f" {keys:>12} {size:>9}"
        lines.append(line)
    return lines
