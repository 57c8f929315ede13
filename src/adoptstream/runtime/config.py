"""Settings, declared once: each field is a `--flag`, an `ADOPTSTREAM_*` variable and a default.

pydantic-settings reads the environment; `add_flags` turns the same fields into argparse flags and
`from_flags` builds the settings from them, so the worker, `publish` and the development tools read a
setting the same way: a flag wins over its variable, which wins over the default. A field made with
`cli=False` (secrets) has no flag: secrets come from a file or the environment, never a command line.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ADOPTSTREAM_"


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and why."""


def parse_broker(url: str) -> str:
    """`kafka://host:port[,host:port]` (or plain host:port) -> bootstrap servers string."""
    servers = url.removeprefix("kafka://").strip().rstrip("/")
    if not servers:
        raise ConfigError(f"broker URL {url!r} names no host:port")
    for server in servers.split(","):
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"broker {server!r} in {url!r} is not host:port")
    return servers


def setting(default: Any, help: str, *, metavar: str | None = None, cli: bool = True) -> Any:
    """A field with its help text (shown by `--help`) and how its flag looks."""
    return Field(default, description=help, json_schema_extra={"metavar": metavar, "cli": cli})


class Settings(BaseSettings):
    """Base of every settings class: `ADOPTSTREAM_*` variables, errors as one-line `ConfigError`s."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe(exc, type(self))) from None

    @classmethod
    def env_var(cls, name: str) -> str:
        return ENV_PREFIX + name.upper()

    @classmethod
    def where(cls, name: str) -> str:
        """How a user sets field `name`: `--flag / ADOPTSTREAM_VAR`, or only the variable for secrets."""
        info = cls.model_fields[name]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        env = cls.env_var(name)
        return f"--{name.replace('_', '-')} / {env}" if extra.get("cli", True) else env


def describe(exc: ValidationError, cls: type[Settings]) -> str:
    """The first problem of a validation error, naming the setting's flag and variable (never a secret)."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if name not in cls.model_fields:
        return message
    where = cls.where(name)
    shown = error.get("input")
    if cls.model_fields[name].annotation in _SECRETS:
        return f"{where}: {message}"
    if error["type"] in ("int_parsing", "int_type", "literal_error", "string_type", "bool_parsing"):
        return f"{where}: {message}, not {shown!r}"
    return f"{where}: {message}"


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_SECRETS = (SecretStr, SecretStr | None)


class KafkaSettings(Settings):
    """How to reach Kafka: the worker's and every command's that talks to the broker.

    Every Kafka client (consumers, producers, admin) connects with the same TLS and SASL settings
    (`runtime.connection.client_options`).
    """

    broker: Annotated[
        str,
        setting("kafka://127.0.0.1:9092", "Kafka bootstrap, kafka://HOST:PORT[,HOST:PORT]", metavar="URL"),
    ]
    security_protocol: Annotated[
        SecurityProtocol,
        setting(
            "PLAINTEXT",
            "how clients talk to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL"
            " (SASL over TLS)",
        ),
    ]
    ssl_ca_file: Annotated[
        Path | None,
        setting(
            None,
            "PEM file of the CA certificates that sign the brokers' certificates (TLS); unset: the system's"
            " trusted CAs",
            metavar="FILE",
        ),
    ]
    ssl_check_hostname: Annotated[
        bool,
        setting(
            True,
            "check that a broker's certificate names the host connected to (--no-ssl-check-hostname"
            " still verifies the certificate chain)",
        ),
    ]
    ssl_cert_file: Annotated[
        Path | None,
        setting(None, "PEM client certificate (chain) for mutual TLS", metavar="FILE"),
    ]
    ssl_key_file: Annotated[
        Path | None,
        setting(None, "PEM private key of the client certificate (mutual TLS)", metavar="FILE"),
    ]
    ssl_key_password_file: Annotated[
        Path | None,
        setting(None, "file holding the password of an encrypted --ssl-key-file", metavar="FILE"),
    ]
    sasl_mechanism: Annotated[
        SaslMechanism | None,
        setting(
            None, "SASL mechanism (with SASL_SSL or SASL_PLAINTEXT): PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
        ),
    ]
    sasl_username: Annotated[str | None, setting(None, "SASL user name", metavar="NAME")]
    sasl_password_file: Annotated[
        Path | None,
        setting(
            None,
            "file holding the SASL password (or set ADOPTSTREAM_SASL_PASSWORD in the environment)",
            metavar="FILE",
        ),
    ]
    sasl_password: Annotated[
        SecretStr | None,
        setting(None, "the SASL password itself: environment only, never a flag", cli=False),
    ]
    connect_timeout_ms: Annotated[
        int,
        setting(
            30_000,
            "how long start-up waits for a broker to answer (connection, TLS handshake, authentication)"
            " before the command fails",
            metavar="MS",
        ),
    ]

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        parse_broker(value)
        return value

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper_name(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_key_password_file",
        "sasl_password_file",
        mode="before",
    )
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(
        "ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password_file", "sasl_password_file"
    )
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return _readable(value)

    @field_validator("connect_timeout_ms")
    @classmethod
    def _timeout(cls, value: int) -> int:
        return _positive(value)

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        protocol, where = self.security_protocol, type(self).where
        tls_files = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password_file")
        sasl_fields = ("sasl_mechanism", "sasl_username", "sasl_password_file", "sasl_password")
        unused = [
            name for name in tls_files if getattr(self, name) is not None and protocol not in TLS_PROTOCOLS
        ]
        unused += [
            name for name in sasl_fields if getattr(self, name) is not None and protocol not in SASL_PROTOCOLS
        ]
        if unused:
            wanted = "SSL or SASL_SSL" if unused[0].startswith("ssl") else "SASL_SSL"
            raise ValueError(
                f"{where(unused[0])} is set, but {where('security_protocol')} is {protocol}, which does"
                f" not use it: set the protocol ({wanted}) or unset it"
            )
        if self.ssl_key_file is not None and self.ssl_cert_file is None:
            raise ValueError(f"{where('ssl_key_file')} is set without {where('ssl_cert_file')}")
        if self.ssl_key_password_file is not None and self.ssl_key_file is None:
            raise ValueError(f"{where('ssl_key_password_file')} is set without {where('ssl_key_file')}")
        if protocol in SASL_PROTOCOLS:
            if self.sasl_mechanism is None:
                raise ValueError(f"{where('sasl_mechanism')} is required with {protocol}")
            if not self.sasl_username:
                raise ValueError(f"{where('sasl_username')} is required with {protocol}")
            if (self.sasl_password is None) == (self.sasl_password_file is None):
                raise ValueError(
                    f"{protocol} needs the password from exactly one of {where('sasl_password_file')} and"
                    f" {where('sasl_password')}"
                )
            self.sasl_secret()  # an empty password file is a mistake worth saying now
        return self

    @property
    def bootstrap_servers(self) -> str:
        return parse_broker(self.broker)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS

    def sasl_secret(self) -> str:
        """The SASL password: the file's content (without its final line break) or the variable's."""
        if self.sasl_password is not None:
            secret = self.sasl_password.get_secret_value()
            name = "sasl_password"
        else:
            assert self.sasl_password_file is not None
            secret = _read_secret(self.sasl_password_file)
            name = "sasl_password_file"
        if not secret:
            raise ConfigError(f"{type(self).where(name)}: the SASL password is empty")
        return secret

    def ssl_key_password(self) -> str | None:
        """The password of an encrypted client key, from its file; None when the key is not encrypted."""
        return None if self.ssl_key_password_file is None else _read_secret(self.ssl_key_password_file)


def _read_secret(path: Path) -> str:
    """A secret file's text without the line break an editor or `echo` leaves at its end."""
    text = path.read_text(encoding="utf-8")
    return text.removesuffix("\n").removesuffix("\r")


class TopicSettings(KafkaSettings):
    """Kafka and the input topic: what `publish` and the traffic tools need, and the worker."""

    topic: Annotated[
        str,
        setting(
            "adoption-events", "input topic of usage events (dead letters go to TOPIC.dlq)", metavar="TOPIC"
        ),
    ]
    partitions: Annotated[int, setting(8, "partitions of topics created by the worker", metavar="N")]

    replication_factor: Annotated[
        int,
        setting(1, "replication factor of topics created by the worker (use 3 in production)", metavar="N"),
    ]

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _kafka_name(value)

    @field_validator("partitions", "replication_factor")
    @classmethod
    def _partitions(cls, value: int) -> int:
        return _positive(value)


class WorkerConfig(TopicSettings):
    """Everything a worker needs."""

    web_port: Annotated[
        int, setting(6066, "port of /metrics, /healthz, /ready (0 = any free port)", metavar="PORT")
    ]
    web_host: Annotated[str, setting("127.0.0.1", "address the web endpoint binds", metavar="HOST")]
    web_config_file: Annotated[
        Path | None,
        setting(
            None,
            "web config file in the format of Prometheus' exporters (tls_server_config,"
            " basic_auth_users with bcrypt hashes): TLS and basic auth for the web endpoints; unset:"
            " plain HTTP",
            metavar="FILE",
        ),
    ]
    data_dir: Annotated[
        Path, setting(Path(".run/adoptstream"), "directory for local state (RocksDB)", metavar="DIR")
    ]
    app_id: Annotated[
        str,
        setting("adoptstream", "application id: prefix of consumer groups and internal topics", metavar="ID"),
    ]
    store: Annotated[
        Literal["rocksdb", "memory"],
        setting(
            "rocksdb", "state store: rocksdb (durable local copy) or memory (rebuilt from the changelog)"
        ),
    ]
    max_features: Annotated[
        int, setting(1000, "cap on distinct feature label values; more fold into __overflow__", metavar="N")
    ]
    max_cohorts: Annotated[
        int, setting(1000, "cap on distinct cohort label values; more fold into __overflow__", metavar="N")
    ]
    max_feature_cohorts: Annotated[
        int,
        setting(
            10_000,
            "cap on distinct (feature, cohort) pairs of the exposure series; a new pair past it counts"
            " under cohort __overflow__ of its feature",
            metavar="N",
        ),
    ]
    session_timeout_ms: Annotated[
        int,
        setting(
            10_000,
            "how long the consumer groups wait for a worker that stopped heartbeating (crashed, or stopped"
            " as a static member) before its partitions move to the others (the broker allows"
            " group.min/max.session.timeout.ms, 6000-1800000 by default)",
            metavar="MS",
        ),
    ]
    heartbeat_interval_ms: Annotated[
        int, setting(1_000, "how often the consumers heartbeat to their groups", metavar="MS")
    ]
    batch_max_records: Annotated[
        int, setting(20_000, "most input records one batch reads (per stage)", metavar="N")
    ]
    instance_id: Annotated[
        str | None,
        setting(
            None,
            "static group membership (Kafka group.instance.id): an id that stays the same for one worker"
            " identity across restarts (e.g. the StatefulSet pod name) and is unique among running"
            " workers. A restarted worker with the same id gets its partitions back at once. With it, a"
            " worker that stops does not leave the groups: its partitions wait up to the session timeout"
            " for it to come back. Without it (dynamic membership) a stop hands them over at once, a"
            " crash after the session timeout",
            metavar="ID",
        ),
    ]
    worker_name: Annotated[
        str, setting(os.uname().nodename, "this worker's name in client ids and logs", metavar="NAME")
    ]
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], setting("INFO", "log level (stderr)")]

    @field_validator("web_port")
    @classmethod
    def _web_port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"web port {value} out of range")
        return value

    @field_validator("web_config_file", mode="before")
    @classmethod
    def _no_web_config_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("web_config_file")
    @classmethod
    def _web_config_readable(cls, value: Path | None) -> Path | None:
        return _readable(value)

    @field_validator("max_features", "max_cohorts", "max_feature_cohorts", "batch_max_records")
    @classmethod
    def _positive(cls, value: int) -> int:
        return _positive(value)

    @field_validator("app_id")
    @classmethod
    def _app_id(cls, value: str) -> str:
        return _kafka_name(value)

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, value: str | None) -> str | None:
        if value is not None:
            check_instance_id(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _heartbeat(self) -> WorkerConfig:
        if self.heartbeat_interval_ms < 1 or self.session_timeout_ms <= self.heartbeat_interval_ms:
            raise ValueError(
                f"session timeout {self.session_timeout_ms} ms must be longer than the heartbeat "
                f"interval ({self.heartbeat_interval_ms} ms)"
            )
        return self

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def repartition_topic(self) -> str:
        return f"{self.app_id}-{self.topic}-by-user"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-{self.topic}-state-changelog"

    @property
    def ingest_group(self) -> str:
        return f"{self.app_id}-ingest"

    @property
    def state_group(self) -> str:
        return f"{self.app_id}-state"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / self.app_id / "state"


def _readable(value: Path | None) -> Path | None:
    if value is not None and not (value.is_file() and os.access(value, os.R_OK)):
        raise ValueError(f"{value}: no such readable file")
    return value


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _kafka_name(value: str) -> str:
    """A topic or group name part: letters, digits, '.', '_' and '-'."""
    if not value or any(c not in _TOPIC_CHARS for c in value):
        raise ValueError(f"{value!r}: use letters, digits, '.', '_' and '-'")
    return value


def check_instance_id(value: str) -> None:
    """A group.instance.id: 1-200 characters, ASCII letters, digits, '.', '_' and '-'."""
    if not value:
        raise ConfigError("instance id is empty: leave it unset for dynamic group membership")
    if len(value) > _MAX_INSTANCE_ID:
        raise ConfigError(f"instance id is {len(value)} characters long, at most {_MAX_INSTANCE_ID}")
    bad = sorted({c for c in value if c not in _TOPIC_CHARS})
    if bad:
        raise ConfigError(
            f"instance id {value!r} contains {''.join(bad)!r}: use letters, digits, '.', '_' and '-'"
        )


_MAX_INSTANCE_ID = 200
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


S = TypeVar("S", bound=Settings)


def add_flags(
    parser: argparse.ArgumentParser, cls: type[Settings], only: Iterable[str] | None = None
) -> None:
    """One `--flag` per field of `cls` (or of `only`), its help naming the variable and the default.

    The parser stops accepting abbreviated flags: `--sasl-password SECRET` must be an error, not
    `--sasl-password-file SECRET` (which would show the secret in the "no such file" message).
    """
    parser.allow_abbrev = False
    wanted = None if only is None else set(only)
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if (wanted is not None and name not in wanted) or not extra.get("cli", True):
            continue
        default = "unset" if info.default is None else info.default
        help_text = f"{info.description} (env {cls.env_var(name)}; default {default})"
        if info.annotation is bool:
            flag = "--" + name.replace("_", "-")
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        kind, choices = _flag_type(info.annotation)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            choices=choices,
            default=None,
            metavar=None if choices else extra.get("metavar"),
            help=help_text,
        )


def from_flags(cls: type[S], args: argparse.Namespace, **overrides: Any) -> S:
    """The settings of `cls`: the flags given in `args` over `ADOPTSTREAM_*` variables over defaults."""
    flags = {name: getattr(args, name) for name in cls.model_fields if getattr(args, name, None) is not None}
    return cls(**flags, **overrides)


def _flag_type(annotation: Any) -> tuple[Any, tuple[str, ...] | None]:
    """What argparse converts a flag's text with, and its choices (for Literal fields)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return str, tuple(typing.get_args(annotation))
    if args and annotation not in (int, str, Path):  # Optional[X]
        return _flag_type(args[0])
    return (annotation if annotation in (int, Path) else str), None
