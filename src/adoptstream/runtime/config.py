"""Worker configuration: defaults, `ADOPTSTREAM_*` environment variables, validation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass(slots=True)
class WorkerConfig:
    """Everything a worker needs; the CLI and env vars fill it in."""

    broker: str = "kafka://127.0.0.1:9092"
    topic: str = "adoption-events"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    data_dir: Path = field(default_factory=lambda: Path(".run/adoptstream"))
    app_id: str = "adoptstream"
    partitions: int = 8
    replication_factor: int = 1
    store: str = "rocksdb"
    max_features: int = 1000
    max_cohorts: int = 1000
    batch_max_records: int = 20_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    worker_name: str = field(default_factory=lambda: os.uname().nodename)
    # Kafka static membership (KIP-345): a stable id per worker identity, None = dynamic membership
    instance_id: str | None = None

    def __post_init__(self) -> None:
        parse_broker(self.broker)
        if self.store not in ("rocksdb", "memory"):
            raise ConfigError(f"store must be 'rocksdb' or 'memory', not {self.store!r}")
        if not 1 <= self.web_port <= 65535 and self.web_port != 0:
            raise ConfigError(f"web port {self.web_port} out of range")
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if self.max_features < 1 or self.max_cohorts < 1:
            raise ConfigError("label caps must be >= 1")
        if not self.topic or any(c not in _TOPIC_CHARS for c in self.topic):
            raise ConfigError(f"topic {self.topic!r}: use letters, digits, '.', '_' and '-'")
        if self.heartbeat_interval_ms < 1 or self.session_timeout_ms <= self.heartbeat_interval_ms:
            raise ConfigError(
                f"session timeout {self.session_timeout_ms} ms must be longer than the heartbeat "
                f"interval ({self.heartbeat_interval_ms} ms)"
            )
        if self.instance_id is not None:
            check_instance_id(self.instance_id)
        self.data_dir = Path(self.data_dir)

    @property
    def bootstrap_servers(self) -> str:
        return parse_broker(self.broker)

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

# config field -> environment variable that sets it (the CLI flag wins)
ENV_VARS: dict[str, str] = {
    "broker": "ADOPTSTREAM_BROKER",
    "topic": "ADOPTSTREAM_TOPIC",
    "web_port": "ADOPTSTREAM_WEB_PORT",
    "web_host": "ADOPTSTREAM_WEB_HOST",
    "data_dir": "ADOPTSTREAM_DATA_DIR",
    "app_id": "ADOPTSTREAM_APP_ID",
    "partitions": "ADOPTSTREAM_PARTITIONS",
    "replication_factor": "ADOPTSTREAM_REPLICATION_FACTOR",
    "store": "ADOPTSTREAM_STORE",
    "max_features": "ADOPTSTREAM_MAX_FEATURES",
    "max_cohorts": "ADOPTSTREAM_MAX_COHORTS",
    "session_timeout_ms": "ADOPTSTREAM_SESSION_TIMEOUT_MS",
    "instance_id": "ADOPTSTREAM_INSTANCE_ID",
}
