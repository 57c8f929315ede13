"""Replays through the real ingest and state code (no broker): one outcome per input message."""

from __future__ import annotations

import asyncio
from unittest import mock

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from adoptstream.core.totals import AdoptionTotals
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.ingest import Ingest
from adoptstream.runtime.processor import OwnedPartition, StateProcessor
from adoptstream.runtime.stats import WorkerStats
from adoptstream.runtime.store import MemoryStore

T1 = 1_717_200_000 * 10**9
MINUTE = 60 * 10**9


class ListSender:
    """Stands in for BatchSender: keeps what was appended."""

    def __init__(self) -> None:
        self.out: list[tuple[str, int, bytes | None, bytes | None]] = []

    def append(self, topic, partition, key, value, headers=(), timestamp_ms=None) -> None:
        self.out.append((topic, partition, key, value))

    async def flush(self) -> list:
        return []


def ingest_twice(value: bytes, first_ns: int, second_ns: int) -> list[tuple[bytes | None, bytes]]:
    """Ingest one input record, 'crash' before the commit, and ingest it again later."""
    cfg = WorkerConfig()
    sender = ListSender()
    ingest = Ingest(cfg, sender, WorkerStats(CollectorRegistry()), by_user_partitions=1, dlq_partitions=1)
    rec = ConsumerRecord(cfg.topic, 0, 41, 0, 0, b"u", value, None, 0, len(value), [])
    for now in (first_ns, second_ns):
        with mock.patch("time.time_ns", return_value=now):
            asyncio.run(ingest.process({TopicPartition(cfg.topic, 0): [rec]}))
    return [(k, v) for t, _, k, v in sender.out if t == cfg.repartition_topic]  # type: ignore[misc]


def apply_all(by_user: list[tuple[bytes | None, bytes]]) -> dict[str, int]:
    cfg = WorkerConfig()
    proc = StateProcessor(cfg, ListSender(), WorkerStats(CollectorRegistry()))  # type: ignore[arg-type]
    owned = OwnedPartition(0, MemoryStore(), AdoptionTotals())
    recs = [
        ConsumerRecord(cfg.repartition_topic, 0, i, 0, 0, k, v, None, 0, 0, [])
        for i, (k, v) in enumerate(by_user)
    ]
    proc._apply(owned, recs)
    return {k: v for k, v in owned.totals.outcomes.items() if v}


def event(ts_ms: int) -> bytes:
    return orjson.dumps({"event_id": "e", "user_id": "u", "type": "use", "feature": "f", "ts": ts_ms})


def test_future_then_valid_on_replay_keeps_one_outcome() -> None:
    ts_ms = (T1 + 6 * MINUTE) // 10**6  # 6 min ahead at the first pass, 4 min at the second
    assert apply_all(ingest_twice(event(ts_ms), T1, T1 + 2 * MINUTE)) == {"future": 1}


def test_replayed_valid_event_counts_once_not_as_duplicate() -> None:
    ts_ms = (T1 - MINUTE) // 10**6
    assert apply_all(ingest_twice(event(ts_ms), T1, T1 + MINUTE)) == {"accepted": 1}


def test_replayed_invalid_message_counts_once() -> None:
    assert apply_all(ingest_twice(b"not json", T1, T1 + MINUTE)) == {"invalid": 1}


def test_merged_totals_cached_between_batches_and_fresh_after_each() -> None:
    cfg = WorkerConfig()
    proc = StateProcessor(cfg, ListSender(), WorkerStats(CollectorRegistry()))  # type: ignore[arg-type]
    proc.owned[0] = OwnedPartition(0, MemoryStore(), AdoptionTotals())
    assert proc.merged_totals().outcomes.get("accepted", 0) == 0
    first = proc.merged_totals()
    assert proc.merged_totals() is first  # no batch in between: the same merge
    key, value = ingest_twice(event((T1 - MINUTE) // 10**6), T1, T1)[0]
    rec = ConsumerRecord(cfg.repartition_topic, 0, 0, 0, 0, key, value, None, 0, 0, [])
    proc._apply(proc.owned[0], [rec])
    after = proc.merged_totals()
    assert after is not first and after.outcomes["accepted"] == 1
    proc.owned[1] = OwnedPartition(1, MemoryStore(), AdoptionTotals())
    proc.revoke([1])  # an assignment change invalidates too
    assert proc.merged_totals() is not after and proc.merged_totals().outcomes["accepted"] == 1
