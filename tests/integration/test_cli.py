"""The ``retrostitch`` command as a user runs it: a child process, real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient

from tests.integration.harness import Pipeline

CLI = [sys.executable, "-m", "streams.cli"]


def test_broker_command_prints_its_address_and_stops_on_sigterm() -> None:
    with subprocess.Popen(
        [*CLI, "broker"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode().strip()
            assert line.startswith("KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:")
            admin = AdminClient({"bootstrap.servers": line.partition("=")[2]})
            assert admin.list_topics(timeout=10).brokers  # it answers the Kafka protocol
        finally:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_produce_command_keys_records_by_anonymous_id(pipeline: Pipeline, tmp_path: Path) -> None:
    lines = [
        {"eventn_ctx_event_id": "e1", "user": {"anonymous_id": "visitor-7"}},
        {"eventn_ctx_event_id": "e2", "user": {"anonymous_id": "null"}},
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\nnot json\n")
    env = {**os.environ, **pipeline.env}

    done = subprocess.run([*CLI, "produce", str(events)], env=env, capture_output=True, timeout=60)

    assert done.returncode == 0, done.stderr.decode()
    assert f"sent 3 records to {pipeline.settings.topics.input}" in done.stderr.decode()
    reader = pipeline.reader(pipeline.settings.topics.input)
    messages = reader.wait_for(lambda messages: len(messages) >= 3, timeout=30)
    keys = {m.value: m.key for m in messages}
    assert keys[orjson.dumps(lines[0])] == b"visitor-7"
    assert keys[orjson.dumps(lines[1])] is None  # a junk id is no key
    assert keys[b"not json"] is None


def test_bad_configuration_stops_the_worker_with_the_key_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("users_recognition:\n  anonymous_id_node: user.anonymous_id\n")

    done = subprocess.run(
        [*CLI, "--config", str(config), "worker"], capture_output=True, timeout=60
    )

    assert done.returncode == 2
    error = done.stderr.decode()
    assert "users_recognition.anonymous_id_node" in error
    assert "must be a string starting with '/'" in error
