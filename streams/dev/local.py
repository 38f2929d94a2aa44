"""The stitcher run locally: a worker in a child process, as ``make run`` and the tests do.

The child is ``python -m streams.cli worker``, given its settings through the same
environment variables an operator would set; nothing here reaches into the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType

import orjson

from streams.core.inputs import InputFormat
from streams.core.persons import (
    Key,
    Linked,
    Merged,
    Message,
    Node,
    PersonLimits,
    identifier_id,
    step,
)
from streams.core.record import SinkRecord, Status
from streams.core.rules import RecognitionRules
from streams.pipeline.counts import Counters
from streams.pipeline.records import InputRecord
from streams.pipeline.route import route
from streams.pipeline.stitch import control, stitch
from streams.state.partition import PartitionState
from streams.state.store import MemoryStore

__all__ = ["WorkerProcess", "expected_mappings", "expected_persons", "expected_versions"]


class WorkerProcess:
    """``retrostitch worker`` as a child process with the given environment."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        config: Path | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.command = list(command or self._command(config))
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _command(config: Path | None) -> list[str]:
        command = [sys.executable, "-m", "streams.cli"]
        if config is not None:
            command += ["--config", str(config)]
        return [*command, "worker"]

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def peak_rss(self) -> int:
        """The child's peak resident set size in bytes (Linux), 0 when not running."""
        if not self.running or self._process is None:
            return 0
        status = Path(f"/proc/{self._process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the child has used so far (Linux), 0 when not running."""
        if not self.running or self._process is None:
            return 0.0
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = int(fields[11]), int(fields[12])  # utime, stime: fields 14, 15 of stat
        return (user + system) / os.sysconf("SC_CLK_TCK")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The child's exit code once it exits by itself within ``timeout`` s, else None."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 60.0, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGTERM: a graceful stop, as Kubernetes does) and wait for the exit."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(sig)
        try:
            code = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._process = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def expected_versions(
    lines: Iterable[bytes],
    rules: RecognitionRules,
    input_format: InputFormat = InputFormat.JSON,
) -> dict[str, int]:
    """The latest version of each event id that the rules give for these lines, computed
    in memory: what the sink topic must show once the worker has processed them."""
    latest: dict[str, int] = {}
    for record in _in_memory(lines, rules, input_format, mappings=False):
        event_id = record.key.decode()
        latest[event_id] = max(latest.get(event_id, 0), record.version)
    return latest


def expected_mappings(
    lines: Iterable[bytes],
    rules: RecognitionRules,
    input_format: InputFormat = InputFormat.JSON,
) -> set[str]:
    """The anonymous ids these lines give a user mapping row (an identity record)."""
    prefix = b"identity:"
    records = _in_memory(lines, rules, input_format, mappings=True)
    return {r.key[len(prefix) :].decode() for r in records if r.key.startswith(prefix)}


def expected_persons(
    lines: Iterable[bytes],
    rules: RecognitionRules,
    limits: PersonLimits,
    input_format: InputFormat = InputFormat.JSON,
    commands: Iterable[bytes] = (),
) -> dict[str, str]:
    """The person of each event id's latest row, as the warehouses show it once the worker
    and the persons agent have processed these lines and then these control ``commands``
    (one partition, in order): each identifier's persons row of the highest version, merges
    followed."""
    rules = replace(rules, persons=True)
    from_lines: list[Message] = []
    from_commands: list[Message] = []
    records = _in_memory(
        lines,
        rules,
        input_format,
        mappings=True,
        to_persons=from_lines,
        commands=commands,
        commands_to_persons=from_commands,
    )
    graph = _Graph()
    persons: dict[str, tuple[int, str]] = {}  # identifier id -> (version, person id)
    merged: dict[str, str] = {}
    for sent in (from_lines, from_commands):  # the graph settles before the commands
        queue = list(sent)
        while queue:
            handled = step(queue.pop(0), graph, limits)
            queue += handled.messages
            for happened in handled.happened:
                if isinstance(happened, Merged):
                    merged[happened.loser_person] = happened.winner_person
                elif isinstance(happened, Linked):
                    row = (max(happened.at, 1), happened.person)
                    _newer(persons, identifier_id(happened.identifier), row)
    latest: dict[str, tuple[int, str]] = {}
    for record in records:
        row = orjson.loads(record.value)
        if record.status is Status.PERSON:
            _newer(persons, row["identifier_id"], (record.version, row["person_id"]))
    for record in records:
        row = orjson.loads(record.value)
        key = row.get("person_key")
        if record.status is Status.IDENTITY or key is None:
            continue
        person = persons.get(key, (0, key))[1]
        while person in merged:
            person = merged[person]
        if record.version >= latest.get(row["event_id"], (0, ""))[0]:
            latest[row["event_id"]] = (record.version, person)
    return {event_id: person for event_id, (_, person) in latest.items()}


def _newer(rows: dict[str, tuple[int, str]], key: str, row: tuple[int, str]) -> None:
    """Keep ``row`` where its version is the highest yet (a warehouse's upsert)."""
    if row[0] >= rows.get(key, (0, ""))[0]:
        rows[key] = row


class _Graph:
    """The person graph in memory (``streams.core.persons.Graph``)."""

    def __init__(self) -> None:
        self._nodes: dict[Key, Node] = {}

    def node(self, key: Key) -> Node | None:
        return self._nodes.get(key)

    def put(self, key: Key, node: Node) -> None:
        self._nodes[key] = node

    def remove(self, key: Key) -> None:
        self._nodes.pop(key, None)


def _in_memory(
    lines: Iterable[bytes],
    rules: RecognitionRules,
    input_format: InputFormat,
    *,
    mappings: bool,
    to_persons: list[Message] | None = None,
    commands: Iterable[bytes] = (),
    commands_to_persons: list[Message] | None = None,
) -> list[SinkRecord]:
    """The sink records of the lines, then of the control ``commands``, as the route agent
    and the stitch agent give them (``to_persons``, ``commands_to_persons``: get the
    messages to the persons agent of each)."""
    records = []
    for offset, line in enumerate(lines):
        value = line.rstrip(b"\r\n")
        if value.strip():
            records.append(InputRecord("expected", 0, offset, None, value))
    routed = route(records, rules, Counters(), input_format=input_format)
    forwarded = [
        InputRecord("repartition", 0, offset, forward.key, forward.value)
        for offset, forward in enumerate(routed.forward)
    ]
    state = PartitionState(MemoryStore(), mappings=mappings)
    persons = to_persons is not None
    stitched = stitch(forwarded, state, rules, Counters(), persons=persons)
    if to_persons is not None:
        to_persons += stitched.to_persons
    controlled = [InputRecord("control", 0, n, None, c) for n, c in enumerate(commands)]
    commanded = control(controlled, state, rules, Counters())
    if commands_to_persons is not None:
        commands_to_persons += commanded.to_persons
    return routed.sink + stitched.sink + commanded.sink
