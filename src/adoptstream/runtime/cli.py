"""`adoptstream worker`: flags, each with an ADOPTSTREAM_* environment variable as default."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from adoptstream.runtime.config import ENV_VARS, ConfigError, WorkerConfig

_HELP = {
    "broker": "Kafka bootstrap, kafka://HOST:PORT[,HOST:PORT]",
    "topic": "input topic of usage events (dead letters go to TOPIC.dlq)",
    "web_port": "port of /metrics, /healthz, /ready (0 = any free port)",
    "web_host": "address the web endpoint binds",
    "data_dir": "directory for local state (RocksDB)",
    "app_id": "application id: prefix of consumer groups and internal topics",
    "partitions": "partitions of topics created by the worker",
    "replication_factor": "replication factor of topics created by the worker",
    "store": "state store: rocksdb (durable local copy) or memory (rebuilt from the changelog)",
    "max_features": "cap on distinct feature label values; more fold into __overflow__",
    "max_cohorts": "cap on distinct cohort label values; more fold into __overflow__",
    "session_timeout_ms": "how long the consumer groups wait for a worker that stopped heartbeating"
    " (crashed, or stopped as a static member) before its partitions move to the others (the"
    " broker allows group.min/max.session.timeout.ms, 6000-1800000 by default)",
    "instance_id": "static group membership (Kafka group.instance.id): an id that stays the same"
    " for one worker identity across restarts (e.g. the StatefulSet pod name) and is unique among"
    " running workers. A restarted worker with the same id gets its partitions back at once. With"
    " it, a worker that stops does not leave the groups: its partitions wait up to the session"
    " timeout for it to come back. Without it (dynamic membership) a stop hands them over at once,"
    " a crash after the session timeout",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a stream worker (ingest + exact state + /metrics)",
        description="Run one adoptstream worker. Start several with the same --app-id to share the load.",
    )
    defaults = WorkerConfig.__dataclass_fields__
    for name, env in ENV_VARS.items():
        f = defaults[name]
        default = f.default if f.default_factory is dataclasses_missing() else f.default_factory()  # type: ignore[misc]
        kind = int if isinstance(default, int) else (Path if isinstance(default, Path) else str)
        choices = ("rocksdb", "memory") if name == "store" else None
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            choices=choices,
            metavar=None if choices else name.upper().split("_")[-1],
            help=f"{_HELP[name]} (env {env}; default {'unset' if default is None else default})",
        )
    p.add_argument("--log-level", default=os.environ.get("ADOPTSTREAM_LOG_LEVEL", "INFO"))
    p.set_defaults(func=run)


def dataclasses_missing() -> object:
    from dataclasses import MISSING

    return MISSING


def config_from(args: argparse.Namespace, environ: dict[str, str] | None = None) -> WorkerConfig:
    """Flags win over environment variables, which win over defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    types = {f.name: f.type for f in fields(WorkerConfig)}
    for name, var in ENV_VARS.items():
        value = getattr(args, name, None)
        if value is None and var in env:
            raw = env[var]
            try:
                value = int(raw) if types[name] == "int" else raw
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not an integer") from None
        if value is not None:
            values[name] = value
    return WorkerConfig(**values)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"adoptstream worker: {exc}", file=sys.stderr)
        return 2
    from adoptstream.runtime.worker import run_worker

    try:
        asyncio.run(run_worker(config))
    except ConfigError as exc:
        print(f"adoptstream worker: {exc}", file=sys.stderr)
        return 2
    return 0
