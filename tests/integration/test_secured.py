"""Every process against an authenticated, encrypted listener: TLS and SASL (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512) through the tests' front before the real local broker
(``tests.secured``), with the real clients: librdkafka (producer, connectors, commands) and
Faust's aiokafka (the worker). A wrong password, an untrusted certificate or the wrong
protocol is one line naming the setting, at once, and never shows the password."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AIOKafkaTopicPartition
from confluent_kafka import Consumer, Producer, TopicPartition
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from psycopg import sql

from streams.core.errors import BrokerError
from streams.dev.local import WorkerProcess
from streams.ops.reach import reach
from streams.settings import load_settings
from streams.worker.app import _credentials
from tests.integration.conftest import make_pipeline
from tests.integration.harness import eventually
from tests.secured import Certificates, Front, secured_broker

CLI = [sys.executable, "-m", "streams.cli"]
USER, PASSWORD = "retrostitch", "pa55-w0rd with spaces"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("certificates"))


def _environment(
    front: Front, certificates: Certificates, protocol: str, mechanism: str = "PLAIN"
) -> dict[str, str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{front.port}"}
    env["KAFKA_SECURITY_PROTOCOL"] = protocol
    if "SASL" in protocol:
        env |= {"KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SASL_USERNAME": USER,
                "KAFKA_SASL_PASSWORD": PASSWORD}  # fmt: skip
    if "SSL" in protocol:
        env["KAFKA_SSL_CA_LOCATION"] = str(certificates.path("ca.pem"))
    return env


@pytest.fixture(scope="module")
def sasl_ssl(certificates: Certificates) -> Iterator[Front]:
    front = Front(upstream=("", 0), tls=certificates.server_context(False), users={USER: PASSWORD})
    with secured_broker(front):
        yield front


@pytest.mark.parametrize(
    ("protocol", "mechanism", "client_certificate"),
    [
        ("SASL_PLAINTEXT", "PLAIN", False),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", False),
        ("SASL_SSL", "SCRAM-SHA-512", False),
        ("SSL", "", True),
    ],
)
def test_both_clients_produce_and_consume_through_the_secured_listener(
    certificates: Certificates, protocol: str, mechanism: str, client_certificate: bool
) -> None:
    """librdkafka with ``client_config``, aiokafka with the worker's Faust credentials:
    each writes a record the other reads back."""
    tls = certificates.server_context(client_certificate) if "SSL" in protocol else None
    users = {USER: PASSWORD} if "SASL" in protocol else {}
    front = Front(upstream=("", 0), tls=tls, users=users)
    with secured_broker(front):
        env = _environment(front, certificates, protocol, mechanism or "PLAIN")
        if client_certificate:
            env |= {"KAFKA_SSL_CERTIFICATE_LOCATION": str(certificates.path("client.pem")),
                    "KAFKA_SSL_KEY_LOCATION": str(certificates.path("client.key"))}  # fmt: skip
        kafka = load_settings(environ=env).kafka
        assert reach(kafka, wait=20) == "retrostitch-local"
        topic = f"secured-{uuid.uuid4().hex[:8]}"
        producer = Producer(kafka.client_config())
        producer.produce(topic, key=b"k", value=b"from librdkafka", partition=0)
        assert producer.flush(20) == 0
        auth = credentials_to_aiokafka_auth(_credentials(kafka))
        read = asyncio.run(_aiokafka_round_trip(kafka.bootstrap_servers, topic, auth))
        assert read == [b"from librdkafka", b"from aiokafka"]
        consumer = Consumer({**kafka.client_config(), "group.id": topic})
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = [m.value() for m in consumer.consume(2, timeout=20)]
        consumer.close()
        assert values == [b"from librdkafka", b"from aiokafka"]
    if "SASL" in protocol:
        assert front.attempts
        assert all(attempt == (mechanism, USER, True) for attempt in front.attempts)


async def _aiokafka_round_trip(bootstrap: str, topic: str, auth: dict[str, object]) -> list[bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **auth)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"from aiokafka", key=b"k", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", **auth)
    await consumer.start()
    try:
        consumer.assign([AIOKafkaTopicPartition(topic, 0)])
        read: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(read) < 2 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                read += [r.value for r in records if r.value is not None]
        return read
    finally:
        await consumer.stop()


def test_worker_connector_and_commands_run_on_sasl_ssl(
    sasl_ssl: Front, certificates: Certificates, postgres_dsn: str, tmp_path: Path
) -> None:
    """SCRAM-SHA-512 over TLS, the password from a file: ``produce`` sends a visitor's
    events, the worker stitches them, ``sink postgres`` writes them, ``erase`` deletes
    them; no log holds the password."""
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    security = _environment(sasl_ssl, certificates, "SASL_SSL", "SCRAM-SHA-512")
    del security["KAFKA_SASL_PASSWORD"]
    security["KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
    pipeline = make_pipeline(security["KAFKA_BOOTSTRAP_SERVERS"], tmp_path, 2, **security)
    schema = f"rs_{pipeline.settings.app_id}"
    env = pipeline.env | {
        "RETROSTITCH_STATE_DIR": str(tmp_path / "state"),
        "RETROSTITCH_POSTGRES_DSN": postgres_dsn,
        "RETROSTITCH_POSTGRES_SCHEMA": schema,
        "RETROSTITCH_SINK_BATCH_MAX_SECONDS": "0.2",
    }
    events = tmp_path / "events.jsonl"
    lines = [
        {"eventn_ctx_event_id": "e1", "user": {"anonymous_id": "a1"}},
        {"eventn_ctx_event_id": "e2", "user": {"anonymous_id": "a1", "id": "u-7"}},
    ]
    events.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    full = {**os.environ, **env}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    sink_log = tmp_path / "sink.log"
    try:
        with (
            sink_log.open("wb") as out,
            subprocess.Popen([*CLI, "sink", "postgres"], env=full, stdout=out, stderr=out) as sink,
        ):
            try:
                sent = subprocess.run([*CLI, "produce", str(events)], env=full,
                                      capture_output=True, timeout=60)  # fmt: skip
                assert sent.returncode == 0, sent.stderr.decode()
                eventually(lambda: _users(postgres_dsn, schema) == {("e1", "u-7"), ("e2", "u-7")},
                           90, "both rows stitched through the secured listener")  # fmt: skip
                erased = subprocess.run([*CLI, "erase", "--identity", "u-7"], env=full,
                                        capture_output=True, timeout=60)  # fmt: skip
                assert erased.returncode == 0, erased.stderr.decode()
                eventually(lambda: _users(postgres_dsn, schema) == set(), 60, "the erasure")
            finally:
                sink.send_signal(signal.SIGTERM)
            assert sink.wait(timeout=30) == 0, sink_log.read_text()
    finally:
        worker.stop()
    logs = sink_log.read_text() + (tmp_path / "worker.log").read_text()
    assert PASSWORD not in logs
    assert sasl_ssl.attempts
    assert all(ok for _, _, ok in sasl_ssl.attempts)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _users(dsn: str, schema: str) -> set[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            rows = conn.execute(
                sql.SQL("SELECT event_id, stitched_user_id FROM {}").format(
                    sql.Identifier(schema, "events")
                )
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return set()
    return {(str(a), str(b)) for a, b in rows}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"KAFKA_SASL_PASSWORD": "not-the-password"}, "kafka.sasl_username / kafka.sasl_password"),
        ({"KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_PASSWORD": "wrong"},
         "kafka.sasl_username / kafka.sasl_password"),
        ({"KAFKA_SSL_CA_LOCATION": "other-ca.pem"}, "kafka.ssl_ca_location"),
        ({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "KAFKA_SASL_USERNAME": "",
          "KAFKA_SASL_PASSWORD": "", "KAFKA_SSL_CA_LOCATION": ""}, "kafka.security_protocol"),
    ],
    ids=["password", "scram-password", "untrusted-ca", "plaintext-to-tls"],
)  # fmt: skip
def test_a_wrong_secret_or_certificate_is_one_line_naming_the_setting(
    sasl_ssl: Front, certificates: Certificates, tmp_path: Path, change: dict[str, str], named: str
) -> None:
    env = {**os.environ, **_environment(sasl_ssl, certificates, "SASL_SSL"), **change}
    if env.get("KAFKA_SSL_CA_LOCATION") == "other-ca.pem":
        env["KAFKA_SSL_CA_LOCATION"] = str(certificates.path("other-ca.pem"))
    events = tmp_path / "events.jsonl"
    events.write_text('{"user": {"anonymous_id": "a1"}}\n')
    started = time.monotonic()

    done = subprocess.run([*CLI, "produce", str(events)], env=env, capture_output=True, timeout=60)

    assert done.returncode == 2
    said = done.stderr.decode().strip().splitlines()
    assert len(said) == 1, said
    assert said[0].startswith(f"retrostitch: {named}")
    assert PASSWORD not in said[0]
    assert "not-the-password" not in said[0]
    assert time.monotonic() - started < 20  # at once, not after the wait for a broker


def test_no_broker_is_one_line_naming_the_bootstrap_setting(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Nothing answers: librdkafka's retries stay quiet, the wait ends in one error."""
    kafka = load_settings(environ={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}).kafka
    with pytest.raises(BrokerError) as raised:
        reach(kafka, wait=3)
    assert str(raised.value).startswith(
        "no broker answered at 127.0.0.1:1 within 3 s"
        " (KAFKA_BOOTSTRAP_SERVERS, kafka.bootstrap_servers)"
    )
    assert capfd.readouterr().err == ""
