"""Reaching the brokers before anything else: one clear line when it cannot be done.

Every process that talks to Kafka first asks the brokers for their metadata with the
settings it was given (``reach``). librdkafka alone would retry a refused connection, a
wrong password or an untrusted certificate forever, printing a line per attempt; here its
own log is silenced for the check and its errors are sorted into what a user can act on:

- credentials refused, a certificate not trusted, a protocol the listener does not speak:
  a ``ConfigError`` naming the setting (the process exits 2 at once);
- no broker answers at all: a ``BrokerError`` naming ``KAFKA_BOOTSTRAP_SERVERS`` once the
  wait is over (a broker that is starting is waited for).

No message carries a password: librdkafka's reasons name the mechanism and the broker,
never the secret, and ours name settings only.
"""

from __future__ import annotations

import logging
import re
import time

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.core.errors import BrokerError, ConfigError
from streams.settings import KafkaSettings

__all__ = ["reach"]

#: how long a broker that refuses connections (or does not resolve) is waited for
DEFAULT_WAIT_SECONDS = 30.0


def reach(kafka: KafkaSettings, wait: float = DEFAULT_WAIT_SECONDS) -> str:
    """The cluster id of the brokers at ``kafka.bootstrap_servers``, reached with the
    security ``kafka`` configures; ``ConfigError`` or ``BrokerError`` (above) otherwise."""
    errors: list[KafkaError] = []
    said = _Said()
    probe = Producer({**kafka.client_config(), "error_cb": errors.append, "logger": said.logger})
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                cluster: str = probe.list_topics(timeout=1.0).cluster_id
                return cluster
            except KafkaException as exc:
                errors.append(exc.args[0])
            probe.poll(0)  # serves error_cb and the logger
            for error in errors:
                _raise_if_fatal(error, kafka)
            if said.closed_before_versions >= 2:
                raise ConfigError(
                    f"kafka.security_protocol {kafka.security_protocol.value}: the broker at"
                    f" {kafka.bootstrap_servers} closes the connection before it says which"
                    " requests it supports: it expects another protocol (SSL or SASL_SSL?)"
                )
            if time.monotonic() >= deadline:
                raise BrokerError(_unreachable(kafka, errors, wait))
            errors.clear()
    finally:
        probe.flush(0)


class _Said(logging.Handler):
    """librdkafka's log lines during the check: kept from the process's output, read for
    the one sign it gives only there (a listener that drops a client speaking another
    protocol: closed in the first exchange, ApiVersions)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_before_versions = 0
        self.logger = logging.Logger("librdkafka.reach")  # no parent: nothing is printed
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if "Disconnected" in line and "state APIVERSION_QUERY" in line:
            self.closed_before_versions += 1


def _raise_if_fatal(error: KafkaError, kafka: KafkaSettings) -> None:
    """A ``ConfigError`` for an error that waiting cannot cure."""
    reason = error.str()
    at = f"the broker at {kafka.bootstrap_servers}"
    protocol = f"kafka.security_protocol {kafka.security_protocol.value}"
    code = error.code()
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        raise ConfigError(
            f"kafka.sasl_username / kafka.sasl_password: {at} refused the credentials"
            f" (kafka.sasl_mechanism {kafka.sasl_mechanism.value}): {_short(reason)}"
        )
    if code == KafkaError._SSL:
        if "certificate verify failed" in reason:
            raise ConfigError(
                f"kafka.ssl_ca_location: the certificate of {at} is not trusted by"
                f" {kafka.ssl_ca_location or 'the system CA store'}: {_short(reason)}"
            )
        raise ConfigError(f"{protocol}: the TLS handshake with {at} failed: {_short(reason)}")
    if "security.protocol" in reason or "SSL listener" in reason:
        raise ConfigError(
            f"{protocol}: {at} closed the connection, it may expect another protocol:"
            f" {_short(reason)}"
        )


_BROKER_PREFIX = re.compile(r"^\S+://\S+?/(?:bootstrap|\d+): ")


def _unreachable(kafka: KafkaSettings, errors: list[KafkaError], wait: float) -> str:
    last = next((e.str() for e in reversed(errors) if e.code() != KafkaError._TIMED_OUT), "")
    because = f": {_short(last)}" if last else ""
    return (
        f"no broker answered at {kafka.bootstrap_servers} within {wait:.0f} s"
        f" (KAFKA_BOOTSTRAP_SERVERS, kafka.bootstrap_servers){because}"
    )


def _short(reason: str) -> str:
    """librdkafka's reason on one line, without the broker it names (ours names it)."""
    line = _BROKER_PREFIX.sub("", " ".join(reason.split()))
    return line if len(line) <= 300 else line[:297] + "..."
