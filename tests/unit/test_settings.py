"""Settings: YAML and environment, the environment winning; bad values name their key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.core.errors import ConfigError
from streams.core.pointer import Pointer
from streams.core.rules import Policy
from streams.settings import SETTINGS, SaslMechanism, SecurityProtocol, Settings, load_settings

JITSU_YAML = """
users_recognition:
  enabled: true
  anonymous_id_node: /anonymousId
  identification_nodes: [/userId, /traits/email]
  event_id_node: /messageId
  identity_conflict_policy: latest
topics:
  partitions: 12
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retrostitch.yaml"
    path.write_text(text)
    return path


def test_defaults_are_jitsus() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    rules = settings.recognition
    assert rules.enabled
    assert rules.anonymous_ids == (Pointer.parse("/user/anonymous_id"),)
    assert rules.identification == (Pointer.parse("/user/id"), Pointer.parse("/user/email"))
    assert rules.event_id == Pointer.parse("/eventn_ctx_event_id")
    assert (settings.topics.input, settings.topics.sink, settings.topics.dead_letter) == (
        "events",
        "events.stitched",
        "events.dlq",
    )


def test_yaml_file_is_read(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, JITSU_YAML), environ={})
    rules = settings.recognition
    assert [p.text for p in rules.anonymous_ids] == ["/anonymousId"]
    assert [p.text for p in rules.identification] == ["/userId", "/traits/email"]
    assert rules.event_id.text == "/messageId"
    assert rules.policy is Policy.LATEST
    assert settings.topics.partitions == 12


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    environ = {
        "USER_RECOGNITION_ENABLED": "false",
        "USER_RECOGNITION_IDENTIFICATION_NODES": "/a, /b/c",
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "RETROSTITCH_STATE_DIR": "/var/lib/retrostitch",
        "RETROSTITCH_PARTITIONS": "3",
    }
    settings = load_settings(_write(tmp_path, JITSU_YAML), environ=environ)
    assert not settings.recognition.enabled
    assert [p.text for p in settings.recognition.identification] == ["/a", "/b/c"]
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.state_dir == Path("/var/lib/retrostitch")
    assert settings.topics.partitions == 3


def test_empty_environment_variable_does_not_override(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, JITSU_YAML), environ={"RETROSTITCH_PARTITIONS": ""})
    assert settings.topics.partitions == 12


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "users_recognition:\n  anonymous_id_node: user.id\n",
            "users_recognition.anonymous_id_node",
        ),
        ("users_recognition:\n  identification_nodes: []\n", "at least one JSON pointer"),
        ("users_recognition:\n  enabled: maybe\n", "expected true or false"),
        (
            "users_recognition:\n  identity_conflict_policy: first\n",
            "expected one of retain, latest",
        ),
        (
            "users_recognition:\n  junk_anonymous_id_pattern: '[0-'\n",
            "not a valid regular expression",
        ),
        ("topics:\n  input_format: csv\n", "expected one of json, snowplow_enriched_tsv"),
        ("topics:\n  partitions: 0\n", "topics.partitions"),
        ("topics:\n  partitions: -3\n", "expected a positive int"),
        (
            "users_recognition:\n  anonymus_id_node: /x\n",
            "unknown setting 'users_recognition.anonymus_id_node'",
        ),
        ("- a list\n", "must hold a mapping"),
        ("users_recognition: [\n", "not valid YAML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(_write(tmp_path, yaml_text), environ={})


def test_bad_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="environment variable RETROSTITCH_BATCH_MAX_EVENTS"):
        load_settings(environ={"RETROSTITCH_BATCH_MAX_EVENTS": "lots"})


def test_heartbeat_must_fit_the_session_three_times() -> None:
    with pytest.raises(ConfigError, match=re.escape("kafka.heartbeat_interval_seconds")):
        load_settings(
            environ={"KAFKA_SESSION_TIMEOUT_SECONDS": "3", "KAFKA_HEARTBEAT_INTERVAL_SECONDS": "2"}
        )


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_every_setting_has_a_unique_key_and_variable() -> None:
    keys = [s.key for s in SETTINGS]
    variables = [s.env for s in SETTINGS if s.env]
    assert len(keys) == len(set(keys))
    assert len(variables) == len(set(variables))


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for setting in SETTINGS:
        assert setting.key.rpartition(".")[2] + ":" in readme, setting.key
        assert setting.env is None or setting.env in readme, setting.env


def test_several_anonymous_id_nodes_from_yaml_or_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("users_recognition:\n  anonymous_id_node: [/anonymousId, /domain_userid]\n")
    from_yaml = load_settings(path, environ={}).recognition.anonymous_ids
    assert [p.text for p in from_yaml] == ["/anonymousId", "/domain_userid"]
    environ = {"USER_RECOGNITION_ANONYMOUS_ID_NODE": "/user/anonymous_id, /anonymousId"}
    from_env = load_settings(environ=environ).recognition.anonymous_ids
    assert [p.text for p in from_env] == ["/user/anonymous_id", "/anonymousId"]


def test_retention_settings_in_minutes_and_zero_for_never() -> None:
    default = load_settings(environ={}).retention
    assert (default.ttl_ms, default.max_held_per_id) == (30 * 24 * 3600 * 1000, 10_000)
    environ = {
        "USER_RECOGNITION_TTL_MINUTES_ANONYMOUS_EVENTS": "90",
        "USER_RECOGNITION_MAX_WAITING_EVENTS_PER_ANONYMOUS_ID": "0",
    }
    retention = load_settings(environ=environ).retention
    assert (retention.ttl_ms, retention.max_held_per_id) == (90 * 60_000, None)
    with pytest.raises(ConfigError, match="USER_RECOGNITION_TTL_MINUTES_ANONYMOUS_EVENTS"):
        load_settings(environ={"USER_RECOGNITION_TTL_MINUTES_ANONYMOUS_EVENTS": "-1"})


SASL = {"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_USERNAME": "key"}


def test_a_secured_cluster_reaches_librdkafka_with_kafkas_own_names(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret with spaces\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {**SASL, "KAFKA_SASL_MECHANISM": "scram-sha-512",
           "KAFKA_SASL_PASSWORD_FILE": str(password), "KAFKA_SSL_CA_LOCATION": str(ca)}  # fmt: skip
    kafka = load_settings(environ=env).kafka
    assert kafka.security_protocol is SecurityProtocol.SASL_SSL
    assert kafka.sasl_mechanism is SaslMechanism.SCRAM_SHA_512
    assert kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "key",
        "sasl.password": "s3cret with spaces",  # one trailing newline of the file dropped
        "ssl.ca.location": str(ca),
    }
    assert "s3cret" not in repr(kafka)
    assert "s3cret" not in str(kafka.sasl_password)


def test_plaintext_is_the_default_and_names_nothing_else() -> None:
    assert load_settings(environ={}).kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "pw"},
         "kafka.sasl_username (KAFKA_SASL_USERNAME) is required: kafka.security_protocol is "
         "SASL_SSL"),
        (SASL, "kafka.sasl_password (KAFKA_SASL_PASSWORD, or a file: KAFKA_SASL_PASSWORD_FILE)"
               " is required"),
        ({"KAFKA_SASL_USERNAME": "key", "KAFKA_SASL_PASSWORD": "pw"},
         "kafka.sasl_username and kafka.sasl_password take effect with SASL_SSL or "
         "SASL_PLAINTEXT only"),
        ({"KAFKA_SSL_CA_LOCATION": "/etc/ssl/certs/ca-certificates.crt"},
         "kafka.ssl_ca_location takes effect with SSL or SASL_SSL only: "
         "kafka.security_protocol is PLAINTEXT"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/no/such/ca.pem"},
         "kafka.ssl_ca_location: cannot read /no/such/ca.pem: No such file or directory"),
        ({**SASL, "KAFKA_SASL_PASSWORD_FILE": "/no/such/file"},
         "kafka.sasl_password_file: cannot read /no/such/file: No such file or directory"),
        ({**SASL, "KAFKA_SASL_PASSWORD": "pw", "KAFKA_SASL_PASSWORD_FILE": "/etc/hostname"},
         "set kafka.sasl_password or kafka.sasl_password_file, not both"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"},
         "KAFKA_SECURITY_PROTOCOL = 'TLS': expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, "
         "SASL_SSL"),
        ({**SASL, "KAFKA_SASL_PASSWORD": "pw", "KAFKA_SASL_MECHANISM": "GSSAPI"},
         "expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/hostname"},
         "kafka.ssl_certificate_location and kafka.ssl_key_location go together"),
    ],
)  # fmt: skip
def test_a_security_mistake_is_one_error_naming_the_setting(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=env)
    assert message in str(raised.value)
    assert "pw" not in str(raised.value).replace("password", "")
