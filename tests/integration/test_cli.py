"""The ``retrostitch`` command as a user runs it: a child process, real broker."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from tests.integration.harness import Pipeline, eventually, free_port, http_get

CLI = [sys.executable, "-m", "streams.cli"]
DASHBOARD = Path(__file__).parents[2] / "deploy/k8s/base/dashboards/retrostitch.json"


def _dashboard_metrics(prefix: str) -> set[str]:
    """The metric names the Grafana dashboard's queries read that start with ``prefix``."""
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    names = {name for query in queries for name in re.findall(r"retrostitch_[a-z_]+", query)}
    assert len(names) > 15
    return {name for name in names if name.startswith(prefix)}


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


def test_a_keyed_input_with_another_partition_count_stops_the_worker(pipeline: Pipeline) -> None:
    """The state table is partitioned like a keyed input: a mismatch is refused at start."""
    env = {**os.environ, **pipeline.env, "RETROSTITCH_INPUT_KEYED_BY_ANONYMOUS_ID": "true",
           "RETROSTITCH_PARTITIONS": str(pipeline.settings.topics.partitions + 1)}  # fmt: skip

    done = subprocess.run([*CLI, "worker"], env=env, capture_output=True, timeout=60)

    assert done.returncode == 2
    error = done.stderr.decode()
    assert f"the input topic {pipeline.settings.topics.input!r} has 4 partitions" in error
    assert "topics.partitions is 5" in error


def test_sink_command_writes_postgres_and_stops_on_sigterm(
    pipeline: Pipeline, postgres_dsn: str, tmp_path: Path
) -> None:
    schema = f"rs_cli_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **pipeline.env}
    env |= {"RETROSTITCH_POSTGRES_DSN": postgres_dsn, "RETROSTITCH_POSTGRES_SCHEMA": schema}
    port = free_port()
    env["RETROSTITCH_STATUS_PORT"] = str(port)
    record = {"event_id": "e1", "anonymous_id": "1", "stitched_user_id": "1", "version": 1,
              "status": "anonymous", "event": {"user": {"anonymous_id": "1"}}}  # fmt: skip
    producer = Producer({"bootstrap.servers": pipeline.bootstrap_servers})
    producer.produce(pipeline.settings.topics.sink, key=b"e1", value=orjson.dumps(record))
    producer.produce(pipeline.settings.topics.sink, key=b"e2", value=b"not a sink record")
    assert producer.flush(10) == 0
    log = tmp_path / "sink.log"
    with (
        log.open("wb") as out,
        subprocess.Popen([*CLI, "sink", "postgres"], env=env, stdout=out, stderr=out) as sink,
    ):
        try:
            eventually(lambda: _count(postgres_dsn, schema) == 1, 60, "the row")

            def metrics() -> list[str]:
                return http_get(port, "/metrics")[1].splitlines()

            def counted() -> bool:
                lag = [
                    line for line in metrics() if line.startswith("retrostitch_sink_consumer_lag{")
                ]
                return bool(lag) and all(line.endswith(" 0") for line in lag)

            eventually(counted, 30, "the connector's lag, sampled every 5 s")
            lines = metrics()
            for line in (
                "retrostitch_sink_records_read_total 2",
                "retrostitch_sink_rows_written_total 1",
                "retrostitch_sink_dead_lettered_total 1",
            ):
                assert line in lines
            assert any(line.startswith("retrostitch_sink_write_seconds_count ") for line in lines)
            served = {line.split("{")[0].split()[0] for line in lines if not line.startswith("#")}
            assert _dashboard_metrics("retrostitch_sink_") <= served
            status = subprocess.run(
                [*CLI, "status", f"http://127.0.0.1:{port}"], env=env, capture_output=True
            )
            report = status.stdout.decode()
            records = (
                "records read 2, rows written 1, identities written 0, persons written 0,"
                " person merges 0, erasures 0"
            )
            assert f"records:      {records}" in report
            assert "trouble:      dead lettered 1, warehouse unavailable 0" in report
            assert f"{pipeline.settings.topics.sink}" in report
        finally:
            sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=30) == 0, log.read_text()
    assert postgres_dsn not in log.read_text()  # no connection string in the logs
    info = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    started = (
        f"connector: reads {pipeline.settings.topics.sink} (group"
        f" {pipeline.settings.app_id}-sink-postgres) on {pipeline.bootstrap_servers}, writes"
        f" postgres {info['host']}:{info.get('port', 5432)}/{info['dbname']},"
        f" table {schema}.events"
    )
    assert started in log.read_text()
    assert "Disconnected" not in log.read_text()  # a clean stop closes its connections
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _count(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "events"))
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def test_worker_serves_health_readiness_and_metrics(pipeline: Pipeline) -> None:
    port = free_port()
    pipeline.env["RETROSTITCH_STATUS_PORT"] = str(port)
    pipeline.env["RETROSTITCH_LOG_FORMAT"] = "json"
    worker = pipeline.worker()
    sink = pipeline.reader(pipeline.settings.topics.sink)
    secret = "private-page-title-0451"
    pipeline.produce(
        orjson.dumps({"eventn_ctx_event_id": "e1", "user": {"anonymous_id": "1"}, "t": secret}),
        orjson.dumps({"eventn_ctx_event_id": "e2", "user": {"anonymous_id": "1", "id": "u"}}),
        orjson.dumps([secret]),  # a dead letter
    )
    sink.wait_for(lambda messages: len(messages) >= 3, timeout=90)

    eventually(lambda: http_get(port, "/readyz")[0] == 200, 30, "ready")
    assert http_get(port, "/healthz") == (200, "ok\n")
    assert http_get(port, "/nope")[0] == 404

    def counted() -> bool:
        text = http_get(port, "/metrics")[1]
        return all(
            line in text.splitlines()
            for line in (
                "retrostitch_anonymous_total 1",
                "retrostitch_amended_total 1",
                "retrostitch_identified_total 1",
            )
        )

    eventually(counted, 30, "metrics count what the test caused")

    def sampled() -> bool:  # every 5 s: lag and state per partition, the last identification
        lines = http_get(port, "/metrics")[1].splitlines()
        lag = [line for line in lines if line.startswith("retrostitch_consumer_lag{")]
        keys = [line for line in lines if line.startswith("retrostitch_state_keys{")]
        return (
            # input, repartition, control, the merge limit's grants and claims, and persons
            len(lag)
            == (5 + pipeline.settings.persons.enabled) * pipeline.settings.topics.partitions
            and all(line.endswith(" 0") for line in lag)
            and sum(float(line.split()[1]) for line in keys) > 0
            and any(line.startswith("retrostitch_last_identification_timestamp") for line in lines)
            and 'retrostitch_batch_seconds_bucket{le="+Inf"}' in "\n".join(lines)
        )

    eventually(sampled, 30, "lag and state gauges")
    lines = http_get(port, "/metrics")[1].splitlines()
    served = {line.split("{")[0].split()[0] for line in lines if not line.startswith("#")}
    worker_metrics = _dashboard_metrics("retrostitch_") - _dashboard_metrics("retrostitch_sink_")
    assert worker_metrics <= served, worker_metrics - served
    env = {**os.environ, **pipeline.env}
    done = subprocess.run(
        [*CLI, "status", f"http://127.0.0.1:{port}"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    report = done.stdout.decode()
    assert "recognition:  identified 1, amended 1, restitched 0, stitched 0, anonymous 1" in report
    assert "merge limit:  claimed 1, quarantined 0, refused anonymous ids 0" in report
    assert "table identity-claims" in report
    assert "last identification:" in report
    assert "s ago" in report
    assert f"{pipeline.settings.topics.input}" in report
    # logs: one JSON object per line, and nothing of the events
    lines = worker.log_path.read_text().splitlines()
    assert lines
    records = [orjson.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= records[0].keys()
    assert {r["level"] for r in records} <= {"debug", "info", "warning", "error", "critical"}
    assert all(secret not in line for line in lines)
    nobody = subprocess.run([*CLI, "status", "http://127.0.0.1:9"], env=env, capture_output=True)
    assert nobody.returncode == 1
    assert "no answer from http://127.0.0.1:9/metrics" in nobody.stderr.decode()


def test_each_kind_of_process_has_its_own_status_port_and_a_taken_one_is_one_line(
    tmp_path: Path,
) -> None:
    from streams.ops.status import DEFAULT_PORTS

    assert len(set(DEFAULT_PORTS.values())) == len(DEFAULT_PORTS)  # side by side on one host
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))
        taken.listen()
        env = {
            **os.environ,
            "RETROSTITCH_STATUS_PORT": str(port),
            "RETROSTITCH_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}",
        }
        done = subprocess.run(
            [*CLI, "sink", "clickhouse"], env=env, capture_output=True, timeout=60
        )
    assert done.returncode == 2
    said = done.stderr.decode().strip().splitlines()
    assert said == [
        f"retrostitch: status port {port} is in use (another process on this host?): set "
        "stitcher.status_port (RETROSTITCH_STATUS_PORT) to a free port, or 0 for none"
    ]


@pytest.mark.parametrize(
    ("warehouse", "variable", "value", "said"),
    [
        ("postgres", "RETROSTITCH_POSTGRES_DSN", "not a dsn",
         "warehouse.postgres_dsn (RETROSTITCH_POSTGRES_DSN) is not a connection string"),
        ("postgres", "RETROSTITCH_POSTGRES_DSN", "postgresql://postgres:hunter2@127.0.0.1:5432/nope",
         'database "nope" does not exist'),
        ("postgres", "RETROSTITCH_POSTGRES_DSN", "postgresql://nobody:hunter2@127.0.0.1:5432/test",
         'role "nobody" does not exist'),
        ("mysql", "RETROSTITCH_MYSQL_DSN", "mysql://root:hunter2@127.0.0.1:3306/nope",
         "warehouse.mysql_dsn (RETROSTITCH_MYSQL_DSN): "),
        ("clickhouse", "RETROSTITCH_CLICKHOUSE_URL", "garbage",
         "warehouse.clickhouse_url (RETROSTITCH_CLICKHOUSE_URL) must be"),
    ],
    ids=["pg-not-a-dsn", "pg-no-database", "pg-no-role", "mysql-no-database", "ch-garbage"],
)  # fmt: skip
def test_a_warehouse_setting_it_refuses_stops_the_connector_at_once(
    pipeline: Pipeline, postgres_dsn: str, mysql_dsn: str, warehouse: str, variable: str,
    value: str, said: str,
) -> None:  # fmt: skip
    """Not an outage to wait out: one line naming the setting, exit 2, no password."""
    env = {**os.environ, **pipeline.env, variable: value}
    done = subprocess.run([*CLI, "sink", warehouse], env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("retrostitch: warehouse.")
    assert said in lines[0]
    assert "hunter2" not in lines[0]


def test_broker_on_a_port_in_use_says_so_and_leaves_the_others_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = Path(tempfile.gettempdir()) / f"retrostitch-broker-{port}.log"
        log.write_text("the other broker's log\n")
        argv = [*CLI, "broker", "--port", str(port)]
        done = subprocess.run(argv, capture_output=True, timeout=30)
    assert done.returncode == 2
    assert done.stdout == b""  # no address printed for a broker that is not there
    assert done.stderr.decode().strip().splitlines() == [
        f"retrostitch: local broker: port {port} on 127.0.0.1 is in use (Address already in use):"
        " choose another --port, or 0 for a free one"
    ]
    assert log.read_text() == "the other broker's log\n"
    log.unlink()


def test_produce_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "produce", str(tmp_path / "missing.jsonl")], capture_output=True)
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        f"retrostitch: produce: no file {tmp_path / 'missing.jsonl'}"
        " (a JSON-lines file, one event per line)"
    ]


def test_config_goes_before_or_after_the_command_and_help_names_the_settings(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("users_recognition:\n  anonymous_id_node: user.anonymous_id\n")
    for argv in (["--config", str(config), "worker"], ["worker", "--config", str(config)]):
        done = subprocess.run([*CLI, *argv], capture_output=True, timeout=60)
        assert done.returncode == 2
        assert "users_recognition.anonymous_id_node" in done.stderr.decode()
    for command in ("worker", "sink", "replay", "produce", "erase", "unmerge", "status"):
        shown = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True)
        assert "--config" in shown.stdout
        assert "KAFKA_BOOTSTRAP_SERVERS" in shown.stdout
        assert "docs/configuration.md" in shown.stdout


def test_query_reads_the_embedded_clickhouse_through_its_running_connector(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """chdb lets one process open its directory: while the connector holds it, ``query``
    asks the connector (on its status port, from this host, read-only statements only);
    without one, ``query`` opens the directory itself."""
    port = free_port()
    env = {**os.environ, **pipeline.env, "RETROSTITCH_STATUS_PORT": str(port),
           "RETROSTITCH_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}"}  # fmt: skip
    record = {"event_id": "e1", "anonymous_id": "1", "stitched_user_id": "1", "version": 1,
              "status": "anonymous", "event": {"user": {"anonymous_id": "1"}}}  # fmt: skip
    producer = Producer({"bootstrap.servers": pipeline.bootstrap_servers})
    producer.produce(pipeline.settings.topics.sink, key=b"e1", value=orjson.dumps(record))
    assert producer.flush(10) == 0

    def query(statement: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "query", statement], env=env, capture_output=True, text=True, timeout=60
        )

    log = tmp_path / "sink.log"
    with (
        log.open("wb") as out,
        subprocess.Popen([*CLI, "sink", "clickhouse"], env=env, stdout=out, stderr=out) as sink,
    ):
        try:
            # until the connector answers, a query would open the directory itself
            eventually(lambda: http_get(port, "/healthz")[0] == 200, 60, "the connector")
            eventually(
                lambda: query("SELECT event_id, status FROM events").stdout
                == "event_id\tstatus\ne1\tanonymous\n",
                60, "the row, read through the connector",
            )  # fmt: skip
            other = {**env, "RETROSTITCH_STATUS_PORT": "0"}
            second = subprocess.run([*CLI, "sink", "clickhouse"], env=other,
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            assert second.returncode == 2
            [said] = second.stderr.strip().splitlines()
            assert said.startswith(
                f"retrostitch: warehouse.clickhouse_url chdb://{tmp_path / 'ch'}: chdb could not"
                " open the directory"
            )
            refused = query("DROP TABLE events")
            assert refused.returncode == 2
            assert refused.stderr.strip() == (
                "retrostitch: query: only one read-only statement is answered: SELECT, WITH,"
                " SHOW, DESCRIBE, EXPLAIN or EXISTS"
            )
        finally:
            sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=30) == 0, log.read_text()
    alone = query("SELECT count() AS rows FROM events")  # no connector: opened here
    assert (alone.returncode, alone.stdout) == (0, "rows\n1\n"), alone.stderr


@pytest.mark.parametrize(
    ("warehouse", "module"),
    [("postgres", "psycopg"), ("mysql", "pymysql"), ("clickhouse", "clickhouse_connect")],
)
def test_a_connector_without_its_driver_names_the_extra_to_install(
    pipeline: Pipeline, warehouse: str, module: str
) -> None:
    """An image built with another warehouse's extra: one line saying what to install."""
    absent = (
        f"import sys; sys.modules[{module!r}] = None; from streams.cli import main;"
        f" sys.exit(main(['sink', {warehouse!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", absent], env={**os.environ, **pipeline.env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"retrostitch: retrostitch sink {warehouse} needs ")
    assert lines[0].endswith(f"pip install 'retrostitch[{warehouse}]'")
