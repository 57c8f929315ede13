"""`adoptstream reset`: forget everything an app computed, so that its workers count the input again.

The recovery path when a topic changed under the state (docs/operations.md, "Topic changes"): it
deletes the app's consumer groups, its internal topics (by-user and changelog) and the local state
in `--data-dir`. The input topic and the dead-letter topic stay. Workers started afterwards create the
internal topics again and read the input from its start; a worker whose own data dir still holds a
store of before discards it (its groups are gone: the app was reset), so other hosts need nothing.
Refused while any worker of the app runs (its groups have members).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time

from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from adoptstream.runtime.config import ConfigError, WorkerConfig, add_flags, from_flags
from adoptstream.runtime.topics import admin_client

_GROUP_NOT_FOUND = (69, 16)  # GROUP_ID_NOT_FOUND, NOT_COORDINATOR (no such group yet)
_NON_EMPTY_GROUP = 68
_UNKNOWN_TOPIC = 3


class ResetRefused(RuntimeError):
    """The app cannot be reset now; the message says why."""


async def reset(config: WorkerConfig, timeout_s: float = 60.0) -> list[str]:
    """Delete the app's groups, internal topics and local state; return what was deleted."""
    admin = admin_client(config)
    await admin.start()
    deleted: list[str] = []
    try:
        # One request for both groups: a group with members (a worker running) is not deleted, and
        # every worker is a member of both, so either both go or neither.
        groups = [config.ingest_group, config.state_group]
        coordinator = await admin.find_coordinator(config.state_group)
        # the admin client sends any request: its public methods only lack this one
        response = await admin._send_request(DeleteGroupsRequest(groups), coordinator)
        for name, error_code in response.results:
            if error_code == _NON_EMPTY_GROUP:
                raise ResetRefused(
                    f"consumer group {name} has members: stop every worker of --app-id {config.app_id} first"
                )
            if error_code and error_code not in _GROUP_NOT_FOUND:
                raise for_code(error_code)(f"deleting consumer group {name}")
            deleted += [f"consumer group {name}"] if not error_code else []
        topics = [config.repartition_topic, config.changelog_topic]
        existing = [t for t in topics if t in set(await admin.list_topics())]
        if existing:
            response = await admin.delete_topics(existing)
            for name, error_code, *_ in response.topic_error_codes:
                if error_code and error_code != _UNKNOWN_TOPIC:
                    raise for_code(error_code)(f"deleting topic {name}")
            deadline = time.monotonic() + timeout_s
            while set(existing) & set(await admin.list_topics()):  # deletion completes asynchronously
                if time.monotonic() > deadline:
                    raise ResetRefused(f"topics {existing} still exist after {timeout_s:.0f} s")
                await asyncio.sleep(0.2)
            deleted += [f"topic {t}" for t in existing]
    finally:
        await admin.close()
    local = config.data_dir / config.app_id
    if local.exists():
        shutil.rmtree(local)
        deleted.append(f"local state {local}")
    return deleted


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reset",
        help="delete an app's groups, internal topics and local state (after a topic changed)",
        description=(
            "Delete the consumer groups <app>-ingest and <app>-state, the topics <app>-<topic>-by-user and "
            "<app>-<topic>-state-changelog, and DATA_DIR/<app>. The input and dead-letter topics stay: "
            "workers started afterwards count the input again from its start (its rejected messages go "
            "to the dead-letter topic a second time). Every worker of the app must be stopped."
        ),
    )
    add_flags(p, WorkerConfig, only=["broker", "topic", "app_id", "data_dir"])
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = from_flags(WorkerConfig, args)
    except ConfigError as exc:
        print(f"adoptstream reset: {exc}", file=sys.stderr)
        return 2
    what = (
        f"consumer groups {config.ingest_group}, {config.state_group}; topics {config.repartition_topic}, "
        f"{config.changelog_topic}; local state {config.data_dir / config.app_id}"
    )
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"adoptstream reset: would delete {what}; pass --yes to do it", file=sys.stderr)
            return 2
        answer = input(f"Delete {what}?\nType the app id ({config.app_id}) to confirm: ")
        if answer.strip() != config.app_id:
            print("nothing deleted", file=sys.stderr)
            return 1
    try:
        deleted = asyncio.run(reset(config))
    except (ResetRefused, KafkaError, OSError) as exc:
        print(f"adoptstream reset: {exc}", file=sys.stderr)
        return 1
    print("deleted: " + ("; ".join(deleted) if deleted else "nothing (already reset)"))
    return 0
