"""Settings: one frozen object per process, read from a YAML file and the environment.

Every setting has a YAML key, most have an environment variable, and the variable wins.
``SETTINGS`` below is the table of the settings every process shares (docs/configuration.md
lists them, and a test keeps the two equal); a layer above declares settings of its own as
a ``Section`` (each warehouse does, in its connector's module), which ``load_settings`` is
given and reads with the rest, so that a process reads and checks every key of a file
whatever it runs.
A wrong value fails at start with a ``ConfigError`` naming the key and what was expected.

    users_recognition:                      # Jitsu's words, so Jitsu users feel at home
      enabled: true                         # USER_RECOGNITION_ENABLED
      anonymous_id_node: /user/anonymous_id
      identification_nodes: [/user/id, /user/email]
      event_id_node: /eventn_ctx_event_id
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from streams.core.errors import ConfigError
from streams.core.inputs import InputFormat
from streams.core.merges import MergeLimit
from streams.core.persons import PersonLimits
from streams.core.pointer import Pointer, PointerError
from streams.core.rules import DEFAULT_JUNK_IDS, DEFAULT_JUNK_PATTERN, Policy, RecognitionRules
from streams.state.retention import Retention

__all__ = [
    "SETTINGS",
    "KafkaSettings",
    "SaslMechanism",
    "Secret",
    "Section",
    "SecurityProtocol",
    "Setting",
    "Settings",
    "TopicSettings",
    "WarehouseSettings",
    "load_settings",
    "text",
]

S = TypeVar("S")


class SecurityProtocol(StrEnum):
    """How a client talks to the brokers (Kafka's ``security.protocol``)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)

    @property
    def tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)


class SaslMechanism(StrEnum):
    """How a SASL client proves who it is (Kafka's ``sasl.mechanism``)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


@dataclass(frozen=True, slots=True)
class Secret:
    """A password: its ``repr`` and ``str`` never show it, so that no log line, error or
    settings dump does; ``reveal`` hands it to the client that needs it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How every process reaches Kafka (``kafka.*``)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # A short session makes a group join (and a takeover after a crash) quick; heartbeats
    # run on their own thread, so a slow batch does not count against it.
    session_timeout: float = 10.0
    heartbeat_interval: float = 3.0
    #: the longest a consumer may go without polling before the group drops it; the
    #: connectors poll on while a warehouse is away, so an outage never reaches it
    max_poll_interval: float = 300.0
    replication_factor: int = 1
    #: the producer's batch limit (librdkafka's default: a batch's changelog goes out in few
    #: requests); 1 sends every record alone (only for brokers whose end offsets stop at the
    #: start of the last batch, like the local one: see the tests)
    producer_max_batch_bytes: int = 1_000_000
    #: the broker answers ListOffsets(latest) with the start of a partition's last batch
    #: + 1, not its end (the local broker does): the worker then ends each changelog write
    #: with a batch of one record, so that a restore reads to the true end
    #: (``streams.worker.checkpoint``). None: on for the project's local broker only
    inexact_end_offsets: bool | None = None
    #: authentication and encryption, as Kafka's own clients name them (docs/configuration.md:
    #: secured clusters); a password comes from the environment or a file, never logged
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism = SaslMechanism.PLAIN
    sasl_username: str = ""
    sasl_password: Secret | None = None
    #: the CA bundle the brokers' certificates are checked against (None: the system's)
    ssl_ca_location: Path | None = None
    #: a client certificate and its key, for clusters that authenticate clients by TLS
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: Secret | None = None

    def client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka's settings for reaching the brokers: the address and the security
        above; every confluent-kafka client of every process starts from these."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.value,
        }
        if self.security_protocol.sasl:
            assert self.sasl_password is not None  # load_settings requires it
            config["sasl.mechanism"] = self.sasl_mechanism.value
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password.reveal()
        if self.security_protocol.tls:
            if self.ssl_ca_location is not None:
                config["ssl.ca.location"] = str(self.ssl_ca_location)
            if self.ssl_certificate_location is not None:
                config["ssl.certificate.location"] = str(self.ssl_certificate_location)
            if self.ssl_key_location is not None:
                config["ssl.key.location"] = str(self.ssl_key_location)
            if self.ssl_key_password is not None:
                config["ssl.key.password"] = self.ssl_key_password.reveal()
        return config


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """The topics' names and partitioning (``topics.*``)."""

    input: str = "events"
    sink: str = "events.stitched"
    dead_letter: str = "events.dlq"
    #: erase and un-merge commands (``retrostitch erase|unmerge``); ``topics.partitions``
    control: str = "events.control"
    #: identifications the merge limit refused: the event as it arrived, the reason in
    #: the header retrostitch.reason (streams.core.merges)
    quarantine: str = "events.quarantine"
    #: partitions of the repartition topic and the state changelog: the most workers
    #: that can share the work. Changing it later needs a state rebuild (deploy/README.md).
    partitions: int = 8
    #: true: the input is keyed by anonymous id (as ``retrostitch produce`` keys it) and has
    #: ``partitions`` partitions, so the stitcher reads it directly and skips the repartition
    #: hop (docs/performance.md measures it); an event keyed otherwise goes to the dead letters
    input_keyed_by_anonymous_id: bool = False
    #: the input's record values: JSON events, or Snowplow enrich's enriched TSV lines, each
    #: turned into the JSON of Snowplow's analytics SDKs before the rules read it
    input_format: InputFormat = InputFormat.JSON


@dataclass(frozen=True, slots=True)
class WarehouseSettings:
    """What every connector (``retrostitch sink <warehouse>``) writes, and how; where a
    warehouse is, and what else it alone needs, is its own section (``Settings.section``)."""

    table: str = "events"
    #: the user mapping table (one row per anonymous id, from identity records); empty:
    #: ``<table>_identities``
    identities_table: str = ""
    #: columns that identify a row (Jitsu's primary_key_fields): upserts and ORDER BY use them
    primary_key_fields: tuple[str, ...] = ("event_id",)
    event_time_node: Pointer = Pointer.parse("/_timestamp")
    batch_max_rows: int = 5000
    batch_max_seconds: float = 0.5
    dead_letter_topic: str = "events.stitched.dlq"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one process is configured with; built once by ``load_settings``."""

    recognition: RecognitionRules = field(default_factory=RecognitionRules)
    retention: Retention = field(default_factory=Retention)
    merges: MergeLimit = field(default_factory=MergeLimit)
    persons: PersonLimits = field(default_factory=PersonLimits)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    app_id: str = "retrostitch"
    state_dir: Path = Path("state")
    #: the most events per checkpoint (two waits for acks, one RocksDB write per partition):
    #: an agent takes whatever was fetched meanwhile, up to this many, and never waits for more
    batch_max_events: int = 2000
    #: every change of an anonymous id's identity also emits its user mapping row (an
    #: ``identity`` record) for the warehouses' mapping tables
    identity_records: bool = True
    standby_replicas: int = 1
    log_level: str = "info"
    #: text, or json: one JSON object per line (streams/ops/logs.py)
    log_format: str = "text"
    #: /healthz, /readyz and /metrics of this process; 0 turns it off. None: the default
    #: of its kind (``streams.ops.status.DEFAULT_PORTS``, a warehouse's in its registry
    #: entry), so that a worker, a replay and each connector start side by side on one host
    status_port: int | None = None
    #: the sections declared above the settings (``Section``: a warehouse's), those that
    #: differ from their defaults; read them with ``section``
    sections: tuple[Any, ...] = ()

    def section(self, kind: type[S]) -> S:
        """The settings of the section whose dataclass is ``kind``; its defaults where the
        file and the environment set none of it (or it was not loaded)."""
        for value in self.sections:
            if isinstance(value, kind):
                return value
        return kind()

    def with_section(self, value: object) -> Settings:
        """These settings with ``value`` as its section's settings."""
        others = tuple(v for v in self.sections if type(v) is not type(value))
        kept = () if value == type(value)() else (value,)
        return replace(self, sections=(*others, *kept))


# -- parsing of one value; each raises ValueError saying what was expected ------------


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def text(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
        raise ValueError("expected a non-empty string")
    return str(value).strip()


def _list(value: Any) -> list[Any]:
    if isinstance(value, str):  # from the environment: comma-separated
        return [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list):
        raise ValueError("expected a list (or, in the environment, a comma-separated string)")
    return value


def _pointer(value: Any) -> Pointer:
    try:
        return Pointer.parse(value)
    except PointerError as exc:
        raise ValueError(str(exc)) from exc


def _pointers(value: Any) -> tuple[Pointer, ...]:
    pointers = tuple(_pointer(item) for item in _list(value))
    if not pointers:
        raise ValueError("expected at least one JSON pointer")
    return pointers


def _optional_pointer(value: Any) -> Pointer | None:
    return None if value is None or value == "" else _pointer(value)


def _markers(value: Any) -> tuple[str, ...]:
    return tuple(marker for item in _list(value) if (marker := str(item).strip().lower()))


def _junk_ids(value: Any) -> frozenset[str]:
    return frozenset(str(item).strip().lower() for item in _list(value))


def _pattern(value: Any) -> re.Pattern[str] | None:
    if value is None or value == "":
        return None
    try:
        return re.compile(text(value))
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc


def _positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a positive {kind.__name__}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a positive {kind.__name__}") from None
        if number <= 0:
            raise ValueError(f"expected a positive {kind.__name__}")
        return number

    return parse


def _count(value: Any) -> int:
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise ValueError("expected a whole number, 0 or more")
    return int(value)


def _minutes_or_never(value: Any) -> int | None:
    """Minutes as milliseconds; 0 means never."""
    minutes = _count(value)
    return None if minutes == 0 else minutes * 60_000


def _positive_minutes(value: Any) -> int:
    """Minutes, 1 or more, as milliseconds."""
    minutes = _count(value)
    if minutes == 0:
        raise ValueError("expected a whole number of minutes, 1 or more")
    return minutes * 60_000


def _limit(value: Any) -> int | None:
    """A whole number; 0 means no limit."""
    return _count(value) or None


E = TypeVar("E", bound=StrEnum)


def _one_of(kind: type[E]) -> Callable[[Any], E]:
    """A parser of one of the enum's values (case and surrounding blanks ignored)."""

    def parse(value: Any) -> E:
        try:
            return kind(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"expected one of {', '.join(k.value for k in kind)}") from None

    return parse


def _named(kind: type[E]) -> Callable[[Any], E]:
    """A parser of one of the enum's values as Kafka writes them (upper case)."""

    def parse(value: Any) -> E:
        try:
            return kind(str(value).strip().upper())
        except ValueError:
            raise ValueError(f"expected one of {', '.join(k.value for k in kind)}") from None

    return parse


def _secret(value: Any) -> Secret:
    """A password, as given (blanks are part of it)."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return Secret(value)


def _path(value: Any) -> Path:
    return Path(text(value))


def _per_node(value: Any) -> tuple[int | None, ...]:
    """Whole numbers, one per identification node; 0 means no limit."""
    limits = tuple(_count(item) or None for item in _list(value))
    if not limits:
        raise ValueError("expected one whole number per identification node (0: no limit)")
    return limits


def _log_format(value: Any) -> str:
    kind = text(value).lower()
    if kind not in {"text", "json"}:
        raise ValueError("expected text or json")
    return kind


def _log_level(value: Any) -> str:
    level = text(value).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError("expected one of debug, info, warning, error")
    return level


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of ``SETTINGS``: a YAML key, its environment variable, how to read it."""

    key: str  # dotted YAML path
    env: str | None
    parse: Callable[[Any], Any]
    target: str  # "section.field" in Settings, or "field"; in a Section, a field of its kind
    default: Any


@dataclass(frozen=True, slots=True)
class Section(Generic[S]):
    """Settings that a layer above declares for itself: a frozen dataclass whose every field
    has a default, and its rows, each row's target one of the dataclass's fields.

    ``load_settings(…, sections=[…])`` reads its rows with ``SETTINGS`` (a key of a section
    not given is an unknown key) and ``Settings.section(kind)`` hands the result back.
    """

    kind: type[S]
    settings: tuple[Setting, ...]


def _identifiers(value: Any) -> tuple[str, ...]:
    names = tuple(text(item) for item in _list(value))
    if not names:
        raise ValueError("expected at least one column name")
    return names


_R, _K, _T, _W = RecognitionRules(), KafkaSettings(), TopicSettings(), WarehouseSettings()
_N = Retention()
_M = MergeLimit()
_P = PersonLimits()
_S = Settings()

#: Every setting: YAML key, environment variable, parser, where it goes, default.
SETTINGS: tuple[Setting, ...] = (
    Setting("users_recognition.enabled", "USER_RECOGNITION_ENABLED", _bool, "recognition.enabled", _R.enabled),
    Setting("users_recognition.anonymous_id_node", "USER_RECOGNITION_ANONYMOUS_ID_NODE", _pointers, "recognition.anonymous_ids", _R.anonymous_ids),
    Setting("users_recognition.identification_nodes", "USER_RECOGNITION_IDENTIFICATION_NODES", _pointers, "recognition.identification", _R.identification),
    Setting("users_recognition.event_id_node", "USER_RECOGNITION_EVENT_ID_NODE", _pointer, "recognition.event_id", _R.event_id),
    Setting("users_recognition.junk_anonymous_ids", "USER_RECOGNITION_JUNK_ANONYMOUS_IDS", _junk_ids, "recognition.junk_ids", DEFAULT_JUNK_IDS),
    Setting("users_recognition.junk_anonymous_id_pattern", "USER_RECOGNITION_JUNK_ANONYMOUS_ID_PATTERN", _pattern, "recognition.junk_pattern", re.compile(DEFAULT_JUNK_PATTERN)),
    Setting("users_recognition.bot_user_agent_node", "USER_RECOGNITION_BOT_USER_AGENT_NODE", _optional_pointer, "recognition.bot_user_agent", _R.bot_user_agent),
    Setting("users_recognition.bot_user_agent_markers", "USER_RECOGNITION_BOT_USER_AGENT_MARKERS", _markers, "recognition.bot_markers", _R.bot_markers),
    Setting("users_recognition.identity_conflict_policy", "USER_RECOGNITION_IDENTITY_CONFLICT_POLICY", _one_of(Policy), "recognition.policy", _R.policy),
    Setting("users_recognition.ttl_minutes.anonymous_events", "USER_RECOGNITION_TTL_MINUTES_ANONYMOUS_EVENTS", _minutes_or_never, "retention.ttl_ms", _N.ttl_ms),
    Setting("users_recognition.ttl_minutes.identities", "USER_RECOGNITION_TTL_MINUTES_IDENTITIES", _minutes_or_never, "retention.identity_ttl_ms", _N.identity_ttl_ms),
    Setting("users_recognition.max_waiting_events_per_anonymous_id", "USER_RECOGNITION_MAX_WAITING_EVENTS_PER_ANONYMOUS_ID", _limit, "retention.max_held_per_id", _N.max_held_per_id),
    Setting("users_recognition.max_anonymous_ids_per_identity", "USER_RECOGNITION_MAX_ANONYMOUS_IDS_PER_IDENTITY", _limit, "merges.max_anonymous_ids", _M.max_anonymous_ids),
    Setting("users_recognition.persons", "USER_RECOGNITION_PERSONS", _bool, "persons.enabled", _P.enabled),
    Setting("users_recognition.max_values_per_person", "USER_RECOGNITION_MAX_VALUES_PER_PERSON", _per_node, "persons.per_node", _P.per_node),
    Setting("users_recognition.merge_window_minutes", "USER_RECOGNITION_MERGE_WINDOW_MINUTES", _positive_minutes, "merges.window_ms", _M.window_ms),
    Setting("kafka.bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS", text, "kafka.bootstrap_servers", _K.bootstrap_servers),
    Setting("kafka.session_timeout_seconds", "KAFKA_SESSION_TIMEOUT_SECONDS", _positive(float), "kafka.session_timeout", _K.session_timeout),
    Setting("kafka.heartbeat_interval_seconds", "KAFKA_HEARTBEAT_INTERVAL_SECONDS", _positive(float), "kafka.heartbeat_interval", _K.heartbeat_interval),
    Setting("kafka.max_poll_interval_seconds", "KAFKA_MAX_POLL_INTERVAL_SECONDS", _positive(float), "kafka.max_poll_interval", _K.max_poll_interval),
    Setting("kafka.replication_factor", "KAFKA_REPLICATION_FACTOR", _positive(int), "kafka.replication_factor", _K.replication_factor),
    Setting("kafka.producer_max_batch_bytes", "KAFKA_PRODUCER_MAX_BATCH_BYTES", _positive(int), "kafka.producer_max_batch_bytes", _K.producer_max_batch_bytes),
    Setting("kafka.inexact_end_offsets", "KAFKA_INEXACT_END_OFFSETS", _bool, "kafka.inexact_end_offsets", _K.inexact_end_offsets),
    Setting("kafka.security_protocol", "KAFKA_SECURITY_PROTOCOL", _named(SecurityProtocol), "kafka.security_protocol", _K.security_protocol),
    Setting("kafka.sasl_mechanism", "KAFKA_SASL_MECHANISM", _named(SaslMechanism), "kafka.sasl_mechanism", _K.sasl_mechanism),
    Setting("kafka.sasl_username", "KAFKA_SASL_USERNAME", text, "kafka.sasl_username", _K.sasl_username),
    Setting("kafka.sasl_password", "KAFKA_SASL_PASSWORD", _secret, "kafka.sasl_password", _K.sasl_password),
    Setting("kafka.sasl_password_file", "KAFKA_SASL_PASSWORD_FILE", _path, "kafka.sasl_password_file", None),
    Setting("kafka.ssl_ca_location", "KAFKA_SSL_CA_LOCATION", _path, "kafka.ssl_ca_location", _K.ssl_ca_location),
    Setting("kafka.ssl_certificate_location", "KAFKA_SSL_CERTIFICATE_LOCATION", _path, "kafka.ssl_certificate_location", _K.ssl_certificate_location),
    Setting("kafka.ssl_key_location", "KAFKA_SSL_KEY_LOCATION", _path, "kafka.ssl_key_location", _K.ssl_key_location),
    Setting("kafka.ssl_key_password", "KAFKA_SSL_KEY_PASSWORD", _secret, "kafka.ssl_key_password", _K.ssl_key_password),
    Setting("topics.input", "RETROSTITCH_INPUT_TOPIC", text, "topics.input", _T.input),
    Setting("topics.sink", "RETROSTITCH_SINK_TOPIC", text, "topics.sink", _T.sink),
    Setting("topics.dead_letter", "RETROSTITCH_DEAD_LETTER_TOPIC", text, "topics.dead_letter", _T.dead_letter),
    Setting("topics.control", "RETROSTITCH_CONTROL_TOPIC", text, "topics.control", _T.control),
    Setting("topics.quarantine", "RETROSTITCH_QUARANTINE_TOPIC", text, "topics.quarantine", _T.quarantine),
    Setting("topics.partitions", "RETROSTITCH_PARTITIONS", _positive(int), "topics.partitions", _T.partitions),
    Setting("topics.input_format", "RETROSTITCH_INPUT_FORMAT", _one_of(InputFormat), "topics.input_format", _T.input_format),
    Setting("topics.input_keyed_by_anonymous_id", "RETROSTITCH_INPUT_KEYED_BY_ANONYMOUS_ID", _bool, "topics.input_keyed_by_anonymous_id", _T.input_keyed_by_anonymous_id),
    Setting("stitcher.app_id", "RETROSTITCH_APP_ID", text, "app_id", _S.app_id),
    Setting("stitcher.state_dir", "RETROSTITCH_STATE_DIR", lambda v: Path(text(v)), "state_dir", _S.state_dir),
    Setting("stitcher.batch_max_events", "RETROSTITCH_BATCH_MAX_EVENTS", _positive(int), "batch_max_events", _S.batch_max_events),
    Setting("stitcher.max_event_bytes", "RETROSTITCH_MAX_EVENT_BYTES", _limit, "recognition.max_event_bytes", _R.max_event_bytes),
    Setting("stitcher.identity_records", "RETROSTITCH_IDENTITY_RECORDS", _bool, "identity_records", _S.identity_records),
    Setting("stitcher.standby_replicas", "RETROSTITCH_STANDBY_REPLICAS", _count, "standby_replicas", _S.standby_replicas),
    Setting("stitcher.status_port", "RETROSTITCH_STATUS_PORT", _count, "status_port", _S.status_port),
    Setting("stitcher.log_level", "RETROSTITCH_LOG_LEVEL", _log_level, "log_level", _S.log_level),
    Setting("stitcher.log_format", "RETROSTITCH_LOG_FORMAT", _log_format, "log_format", _S.log_format),
    Setting("warehouse.table", "RETROSTITCH_WAREHOUSE_TABLE", text, "warehouse.table", _W.table),
    Setting("warehouse.identities_table", "RETROSTITCH_IDENTITIES_TABLE", text, "warehouse.identities_table", _W.identities_table),
    Setting("warehouse.primary_key_fields", "RETROSTITCH_PRIMARY_KEY_FIELDS", _identifiers, "warehouse.primary_key_fields", _W.primary_key_fields),
    Setting("warehouse.event_time_node", "RETROSTITCH_EVENT_TIME_NODE", _pointer, "warehouse.event_time_node", _W.event_time_node),
    Setting("warehouse.batch_max_rows", "RETROSTITCH_SINK_BATCH_MAX_ROWS", _positive(int), "warehouse.batch_max_rows", _W.batch_max_rows),
    Setting("warehouse.batch_max_seconds", "RETROSTITCH_SINK_BATCH_MAX_SECONDS", _positive(float), "warehouse.batch_max_seconds", _W.batch_max_seconds),
    Setting("warehouse.dead_letter_topic", "RETROSTITCH_SINK_DEAD_LETTER_TOPIC", text, "warehouse.dead_letter_topic", _W.dead_letter_topic),
)  # fmt: skip


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    sections: Sequence[Section[Any]] = (),
) -> Settings:
    """Settings from an optional YAML file, overridden by environment variables: those of
    ``SETTINGS`` and of each of ``sections`` (the CLI gives every warehouse's)."""
    environ = os.environ if environ is None else environ
    document = _read_yaml(config_file) if config_file is not None else {}
    flat = _flatten(document)
    known = {setting.key for setting in SETTINGS}
    known.update(setting.key for section in sections for setting in section.settings)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(
            f"{config_file}: unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}"
        )
    settings = _build(_read(SETTINGS, flat, environ, config_file))
    for section in sections:
        values = _read(section.settings, flat, environ, config_file)
        settings = settings.with_section(section.kind(**values))
    return settings


def _read(
    settings: Sequence[Setting],
    flat: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None,
) -> dict[str, Any]:
    """Each setting's value by its target: the environment's, else the file's, else its
    default."""
    values: dict[str, Any] = {}
    for setting in settings:
        if setting.env is not None and environ.get(setting.env, "") != "":
            raw, origin = environ[setting.env], f"environment variable {setting.env}"
        elif setting.key in flat:
            raw, origin = flat[setting.key], f"{setting.key} in {config_file}"
        else:
            values[setting.target] = setting.default
            continue
        try:
            values[setting.target] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{origin} = {raw!r}: {exc}") from None
    return values


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return document


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _secured(sasl_password_file: Path | None = None, **values: Any) -> KafkaSettings:
    """The Kafka settings, their security checked whole: what a protocol needs is there,
    nothing is set that the protocol would ignore, and every file named can be read."""
    if sasl_password_file is not None:
        if values.get("sasl_password") is not None:
            raise ConfigError("set kafka.sasl_password or kafka.sasl_password_file, not both")
        password = _readable(sasl_password_file, "kafka.sasl_password_file").rstrip("\r\n")
        if not password:
            raise ConfigError(f"kafka.sasl_password_file: {sasl_password_file} is empty")
        values["sasl_password"] = Secret(password)
    kafka = KafkaSettings(**values)
    protocol = kafka.security_protocol
    named = f"kafka.security_protocol is {protocol.value}"
    if protocol.sasl:
        if not kafka.sasl_username:
            raise ConfigError(f"kafka.sasl_username (KAFKA_SASL_USERNAME) is required: {named}")
        if kafka.sasl_password is None:
            raise ConfigError(
                "kafka.sasl_password (KAFKA_SASL_PASSWORD, or a file: KAFKA_SASL_PASSWORD_FILE)"
                f" is required: {named}"
            )
    elif kafka.sasl_username or kafka.sasl_password is not None:
        raise ConfigError(
            f"kafka.sasl_username and kafka.sasl_password take effect with SASL_SSL or"
            f" SASL_PLAINTEXT only: {named}"
        )
    files = {
        "kafka.ssl_ca_location": kafka.ssl_ca_location,
        "kafka.ssl_certificate_location": kafka.ssl_certificate_location,
        "kafka.ssl_key_location": kafka.ssl_key_location,
    }
    for key, path in files.items():
        if path is not None:
            if not protocol.tls:
                raise ConfigError(f"{key} takes effect with SSL or SASL_SSL only: {named}")
            _readable(path, key)
    if (kafka.ssl_certificate_location is None) != (kafka.ssl_key_location is None):
        raise ConfigError(
            "kafka.ssl_certificate_location and kafka.ssl_key_location go together:"
            " a client certificate needs its key"
        )
    if kafka.ssl_key_password is not None and kafka.ssl_key_location is None:
        raise ConfigError("kafka.ssl_key_password is set without kafka.ssl_key_location")
    return kafka


def _readable(path: Path, key: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(f"{key}: cannot read {path}: {reason}") from None


def _build(values: dict[str, Any]) -> Settings:
    sections: dict[str, dict[str, Any]] = {
        "recognition": {},
        "retention": {},
        "merges": {},
        "persons": {},
        "kafka": {},
        "topics": {},
        "warehouse": {},
    }
    top: dict[str, Any] = {}
    for target, value in values.items():
        section, _, name = target.rpartition(".")
        (sections[section] if section else top)[name] = value
    kafka = _secured(**sections["kafka"])
    if kafka.heartbeat_interval * 3 > kafka.session_timeout:
        raise ConfigError(
            "kafka.heartbeat_interval_seconds must be at most a third of "
            f"kafka.session_timeout_seconds (got {kafka.heartbeat_interval} and {kafka.session_timeout})"
        )
    merges = MergeLimit(**sections["merges"])
    return Settings(
        recognition=RecognitionRules(**sections["recognition"]),
        retention=Retention(**sections["retention"]),
        merges=merges,
        # the merge limit counts per person too (docs/rules.md: persons)
        persons=PersonLimits(
            **sections["persons"],
            max_anonymous_ids=merges.max_anonymous_ids,
            window_ms=merges.window_ms,
        ),
        kafka=kafka,
        topics=TopicSettings(**sections["topics"]),
        warehouse=WarehouseSettings(**sections["warehouse"]),
        **top,
    )
