"""Our worker's throughput under two environments, runs alternating: an A/B on one machine.

    python -m tests.bench.ab --mix b --runs 2 --b USER_RECOGNITION_MAX_ANONYMOUS_IDS_PER_IDENTITY=0
    git worktree add /tmp/old 15c4145 && python -m tests.bench.ab --mix a --b PYTHONPATH=/tmp/old
    python -m tests.bench.ab --mix a --b PYTHON=/tmp/oldvenv/bin/python

Each side is a list of ``NAME=VALUE`` settings for the worker's environment (``PYTHONPATH``
runs another checkout's code: the worker runs with ``python -P``, so the working directory
does not come first), except ``PYTHON``: the interpreter the worker runs with. A checkout
whose modules sit elsewhere needs its own (a copy of ``.venv`` with that checkout installed
by ``pip install --no-deps -e``), as Faust finds the worker's transport by the installed
entry points, not by ``PYTHONPATH``. Input keyed by anonymous id (``--repartitioned``: not,
so the worker repartitions it), a fresh local broker per run,
events/s measured as ``make bench`` does; A and B take turns, so a machine that slows down
over the minutes slows both.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from streams.dev.broker import configured_or_local
from tests.bench import stitcher
from tests.bench.__main__ import KEYED, MIXES, PARTITIONS, _expected_sink_records


def _environment(assignments: list[str]) -> dict[str, str]:
    pairs = [item.partition("=") for item in assignments]
    bad = [name for name, equals, _ in pairs if not equals or not name]
    if bad:
        raise SystemExit(f"expected NAME=VALUE, got {bad[0]!r}")
    return {name: value for name, _, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", choices=sorted(MIXES), default="a")
    parser.add_argument("--runs", type=int, default=2, help="runs of each side")
    parser.add_argument("--a", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--b", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--repartitioned", action="store_true",
        help="the input not keyed by anonymous id: the worker's repartition hop too",
    )  # fmt: skip
    args = parser.parse_args()
    keyed = {} if args.repartitioned else KEYED
    mix = MIXES[args.mix]
    sides = {"A": _environment(args.a), "B": _environment(args.b)}
    rates: dict[str, list[float]] = {"A": [], "B": []}
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="retrostitch-ab-") as tmp:
        for run in range(args.runs):
            for side, extra in sides.items():
                workdir = Path(tmp) / f"{side}-{run}"
                workdir.mkdir()
                settings = dict(extra)
                command = stitcher.ours()
                if "PYTHON" in settings:
                    command = [settings.pop("PYTHON"), *command[1:]]
                with configured_or_local() as bootstrap:
                    env = stitcher.environment(bootstrap, PARTITIONS, **keyed, **settings)
                    result = stitcher.run_worker(
                        env, mix, command, _expected_sink_records(mix), workdir
                    )
                rates[side].append(result.rate)
                cpu[side].append(result.cpu_us_per_event)
                print(
                    f"mix {mix.name} {side} run {run + 1}: {result.rate:,.0f} events/s, "
                    f"{result.cpu_us_per_event:.1f} µs CPU per event",
                    flush=True,
                )
    for side, extra in sides.items():
        shown = " ".join(f"{k}={v}" for k, v in extra.items()) or "(as is)"
        values = ", ".join(f"{rate:,.0f}" for rate in rates[side])
        per_event = ", ".join(f"{us:.1f}" for us in cpu[side])
        print(f"{side} {shown}: {values} events/s; {per_event} µs CPU per event")


if __name__ == "__main__":
    main()
