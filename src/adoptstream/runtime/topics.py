"""The worker's topics: create the missing ones, check they fit together, and tell them apart by id.

A topic deleted and created again under the same name restarts its offsets, and the worker's state
remembers offsets (the last input offset applied per user and input partition): a recreated input
topic would have its new events skipped as replays. Kafka gives every topic incarnation its own id
(topic ids, KIP-516, in Metadata v10+), which aiokafka's own metadata request (v5) does not read: the
Metadata v12 request below asks for them. The state records the ids of what it was built from, and
the worker compares them at start and at every assignment (docs/operations.md, "Topic changes").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    IncompatibleBrokerVersion,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from adoptstream.runtime.config import ConfigError, WorkerConfig
from adoptstream.runtime.connection import client_options

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8 * 1024 * 1024  # the producer's largest request, the dead-letter topic's record limit
RESET_HINT = (
    "stop every worker of this --app-id and run `adoptstream reset` (docs/operations.md, 'Topic changes')"
)


class TopicMismatch(RuntimeError):
    """A topic is not the one the worker's state was built from: recreated, truncated or repartitioned."""


@dataclass(frozen=True)
class TopicLayout:
    """What the worker found at start: the by-user partition count and every topic's id."""

    by_user_partitions: int
    ids: dict[str, str | None]  # topic -> its id (None: the broker does not tell, older than Kafka 2.8)


def admin_client(config: WorkerConfig) -> AIOKafkaAdminClient:
    """An admin client of the app (not started)."""
    return AIOKafkaAdminClient(**client_options(config), client_id=f"{config.app_id}-admin")


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    existing = set(await admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}


async def ensure_topics(config: WorkerConfig, timeout_s: float = 30.0) -> TopicLayout:
    """Make sure all four topics exist and fit together; return their layout."""
    admin = admin_client(config)
    await admin.start()
    try:
        names = [config.topic, config.dlq_topic, config.repartition_topic, config.changelog_topic]
        counts = await _partition_counts(admin, names)
        by_user = counts.get(config.repartition_topic, config.partitions)
        plan = {
            config.topic: (config.partitions, {}),
            # a dead letter is an input message plus three headers: more than the broker's default limit
            config.dlq_topic: (
                counts.get(config.topic, config.partitions),
                {"max.message.bytes": str(MAX_REQUEST_BYTES)},
            ),
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
                f"{config.repartition_topic} has {counts[config.repartition_topic]}: they must match; "
                + RESET_HINT
            )
        return TopicLayout(counts[config.repartition_topic], await _topic_ids(admin, names))
    finally:
        await admin.close()


async def topic_id(config: WorkerConfig, topic: str) -> str | None:
    """The id of `topic` now (None when the broker does not tell or the topic is missing)."""
    admin = admin_client(config)
    await admin.start()
    try:
        return (await _topic_ids(admin, [topic])).get(topic)
    finally:
        await admin.close()


async def check_input(
    consumer: AIOKafkaConsumer, config: WorkerConfig, started_id: str | None, partitions: list[int]
) -> tuple[dict[int, Exception], dict[int, int]]:
    """Check newly assigned input partitions before the ingest stage reads them.

    Returns the partitions that must not be read (the topic was recreated since the worker started, or
    its committed offset is beyond the partition's end: offsets went back) and, for the others, how many
    records the broker deleted (retention) before they were read.
    """
    topic = config.topic
    if started_id is not None:
        now_id = await topic_id(config, topic)
        if now_id is not None and now_id != started_id:
            err = TopicMismatch(
                f"input topic {topic} was recreated while the worker ran (its id went from {started_id} "
                f"to {now_id}): its offsets start again, and the state would take new events for replays; "
                + RESET_HINT
            )
            return dict.fromkeys(partitions, err), {}
    tps = [TopicPartition(topic, p) for p in partitions]
    begins = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    failures: dict[int, Exception] = {}
    lost: dict[int, int] = {}
    for tp in tps:
        committed = await consumer.committed(tp)
        if committed is None:
            continue
        if committed > ends[tp]:
            failures[tp.partition] = TopicMismatch(
                f"input partition {topic}/{tp.partition}: this group already read up to offset {committed}, "
                f"but the partition ends at {ends[tp]}: the topic was recreated or truncated, and its new "
                "events would be taken for replays; " + RESET_HINT
            )
        elif committed < begins[tp]:
            lost[tp.partition] = begins[tp] - committed
    return failures, lost


# -- topic ids: Metadata v12 (flexible), which aiokafka does not implement --------------------------


class _Uuid(AbstractType[bytes]):
    @classmethod
    def encode(cls, value: bytes) -> bytes:
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        value = data.read(16)
        if len(value) != 16:
            raise ValueError("Buffer underrun decoding a UUID")
        return value


_INT32S = CompactArray(Int32)


class _MetadataResponseV12(Response):
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", _INT32S),
                        ("isr_nodes", _INT32S),
                        ("offline_replicas", _INT32S),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _MetadataRequestV12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = _MetadataResponseV12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class _TopicIdsRequest(Request[_MetadataRequestV12]):
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV12]) -> _MetadataRequestV12:
        return request_struct_class([(_NO_ID, name, {}) for name in self._topics], False, False, {})


_NO_ID = bytes(16)


def format_topic_id(raw: bytes) -> str:
    """A topic id as Kafka's tools print it (URL-safe base64, no padding)."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _topic_ids(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, str | None]:
    try:
        # the admin client sends any request: its public methods only lack this one
        response = await admin._send_request(_TopicIdsRequest(topics))
    except (IncompatibleBrokerVersion, NotImplementedError) as exc:  # a broker older than Kafka 3.1
        log.warning("topic ids unknown (%s): recreated topics are detected by their offsets only", exc)
        return dict.fromkeys(topics)
    ids: dict[str, str | None] = dict.fromkeys(topics)
    for error_code, name, raw_id, *_ in response.topics:
        if not error_code and raw_id != _NO_ID:
            ids[name] = format_topic_id(raw_id)
    return ids


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
