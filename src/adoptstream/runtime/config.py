"""Settings, declared once: each field is a `--flag`, an `ADOPTSTREAM_*` variable and a default.

pydantic-settings reads the environment; `add_flags` turns the same fields into argparse flags and
`from_flags` builds the settings from them, so the worker, `publish` and the development tools read a
setting the same way: a flag wins over its variable, which wins over the default. A field made with
`cli=False` (secrets) has no flag.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
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
            raise ConfigError(describe(exc)) from None

    @classmethod
    def env_var(cls, name: str) -> str:
        return ENV_PREFIX + name.upper()


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error, naming the setting's flag and variable."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not name:
        return message
    where = f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}"
    shown = error.get("input")
    if error["type"] in ("int_parsing", "int_type", "literal_error", "string_type"):
        return f"{where}: {message}, not {shown!r}"
    return f"{where}: {message}"


class KafkaSettings(Settings):
    """How to reach Kafka: the worker's and every command's that talks to the broker."""

    broker: Annotated[
        str,
        setting("kafka://127.0.0.1:9092", "Kafka bootstrap, kafka://HOST:PORT[,HOST:PORT]", metavar="URL"),
    ]

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        parse_broker(value)
        return value

    @property
    def bootstrap_servers(self) -> str:
        return parse_broker(self.broker)


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
    """One `--flag` per field of `cls` (or of `only`), its help naming the variable and the default."""
    wanted = None if only is None else set(only)
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if (wanted is not None and name not in wanted) or not extra.get("cli", True):
            continue
        kind, choices = _flag_type(info.annotation)
        default = "unset" if info.default is None else info.default
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            choices=choices,
            default=None,
            metavar=None if choices else extra.get("metavar"),
            help=f"{info.description} (env {cls.env_var(name)}; default {default})",
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
