"""Create the input, dead-letter, by-user and changelog topics when missing; check they fit together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from adoptstream.runtime.config import ConfigError, WorkerConfig
from adoptstream.runtime.connection import client_options

log = logging.getLogger(__name__)


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    existing = set(await admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}


async def ensure_topics(config: WorkerConfig, timeout_s: float = 30.0) -> int:
    """Make sure all four topics exist; return the partition count of the by-user topic."""
    admin = AIOKafkaAdminClient(**client_options(config), client_id=f"{config.app_id}-admin")
    await admin.start()
    try:
        names = [config.topic, config.dlq_topic, config.repartition_topic, config.changelog_topic]
        counts = await _partition_counts(admin, names)
        by_user = counts.get(config.repartition_topic, config.partitions)
        plan = {
            config.topic: (config.partitions, {}),
            config.dlq_topic: (counts.get(config.topic, config.partitions), {}),
            config.repartition_topic: (by_user, {}),
            # the changelog is co-partitioned with the by-user topic: partition p holds p's state
            config.changelog_topic: (by_user, {"cleanup.policy": "compact"}),
        }
        missing = [
            NewTopic(name, n, config.replication_factor, topic_configs=cfg)
            for name, (n, cfg) in plan.items()
            if name not in counts
        ]
        if missing:
            log.info("creating topics %s", ", ".join(t.name for t in missing))
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was quicker
                check_created(await admin.create_topics(missing))
        deadline = time.monotonic() + timeout_s
        while True:
            counts = await _partition_counts(admin, names)
            if all(name in counts for name in names):
                break
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"topics {sorted(set(names) - set(counts))} did not appear within {timeout_s}s"
                )
            await asyncio.sleep(0.1)
        if counts[config.changelog_topic] != counts[config.repartition_topic]:
            raise ConfigError(
                f"{config.changelog_topic} has {counts[config.changelog_topic]} partitions but "
                f"{config.repartition_topic} has {counts[config.repartition_topic]}: they must match"
            )
        return counts[config.repartition_topic]
    finally:
        await admin.close()


def check_created(response: Any) -> None:
    """Raise a `ConfigError` for the first topic a CreateTopics response refused (a topic that already
    exists is fine: another worker was quicker). aiokafka returns these errors instead of raising."""
    for name, code, message in response.topic_errors:
        error = for_code(code)
        if code == 0 or error is TopicAlreadyExistsError:
            continue
        hint = _HINTS.get(error, "")
        detail = f": {message}" if message else ""
        raise ConfigError(f"Kafka refused to create topic {name} ({error.__name__}{detail}){hint}")


_HINTS = {
    TopicAuthorizationFailedError: "; the Kafka user needs Create on it (README, Production: ACLs), or create"
    " the topics beforehand",
    ClusterAuthorizationFailedError: "; the Kafka user needs Create on the topic (README, Production: ACLs)",
    InvalidReplicationFactorError: "; check --replication-factor / ADOPTSTREAM_REPLICATION_FACTOR",
    InvalidPartitionsError: "; check --partitions / ADOPTSTREAM_PARTITIONS",
}
