"""`adoptstream worker`: one flag per setting, each with an ADOPTSTREAM_* environment variable."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from adoptstream.runtime.config import ConfigError, WorkerConfig, add_flags, from_flags


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a stream worker (ingest + exact state + /metrics)",
        description="Run one adoptstream worker. Start several with the same --app-id to share the load.",
    )
    add_flags(p, WorkerConfig)
    p.set_defaults(func=run)


def config_from(args: argparse.Namespace) -> WorkerConfig:
    """Flags win over environment variables, which win over defaults."""
    return from_flags(WorkerConfig, args)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"adoptstream worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    from adoptstream.runtime.worker import run_worker

    try:
        asyncio.run(run_worker(config))
    except ConfigError as exc:
        print(f"adoptstream worker: {exc}", file=sys.stderr)
        return 2
    return 0
