"""Replays through the real ingest and state stages (no broker): one outcome per input message."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from adoptstream.core.totals import AdoptionTotals
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.ingest import Ingest, route
from adoptstream.runtime.processor import OwnedPartition, StateProcessor, apply_batch
from adoptstream.runtime.sender import SentBatch
from adoptstream.runtime.stats import WorkerStats
from adoptstream.runtime.store import MemoryStore

T1 = 1_717_200_000 * 10**9
MINUTE = 60 * 10**9


class ListSender:
    """Stands in for BatchSender: keeps what was appended; a flush 'acknowledges' it at once."""

    def __init__(self) -> None:
        self.out: list[tuple[str, int, bytes | None, bytes | None]] = []
        self._flushed = 0

    def append(self, topic, partition, key, value, headers=(), timestamp_ms=None) -> None:
        self.out.append((topic, partition, key, value))

    def extend(self, topic, partition, keys, values) -> None:
        self.out.extend((topic, partition, k, v) for k, v in zip(keys, values, strict=True))

    async def flush(self) -> list[SentBatch]:
        sent: dict[tuple[str, int], list[int]] = {}
        for i, (topic, partition, _, _) in enumerate(self.out):
            offset = sum(1 for t, p, _, _ in self.out[:i] if (t, p) == (topic, partition))
            if i >= self._flushed:
                sent.setdefault((topic, partition), []).append(offset)
        self._flushed = len(self.out)
        return [SentBatch(t, p, offsets[0], len(offsets)) for (t, p), offsets in sent.items()]


def ingest_twice(value: bytes, first_ns: int, second_ns: int) -> list[tuple[bytes | None, bytes]]:
    """Route one input record, 'crash' before the commit, and route it again later."""
    rec = ConsumerRecord("in", 0, 41, 0, 0, b"u", value, None, 0, len(value), [])
    out = []
    for now in (first_ns, second_ns):
        for entries in route([rec], 1, now).by_user.values():
            out += [(None, v) for v in records.packs(entries)]
    return out


def apply_all(by_user: list[tuple[bytes | None, bytes]]) -> dict[str, int]:
    totals = AdoptionTotals()
    apply_batch(MemoryStore(), totals, by_user)
    return {k: v for k, v in totals.outcomes.items() if v}


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


def test_ingest_sends_packs_and_dead_letters_with_their_reason() -> None:
    cfg = WorkerConfig()
    sender = ListSender()
    stats = WorkerStats(CollectorRegistry())
    ingest = Ingest(cfg, sender, stats, 2, 1, clock_ns=lambda: T1)  # type: ignore[arg-type]
    recs = [
        ConsumerRecord(cfg.topic, 0, i, 0, 0, b"k", v, None, 0, len(v), [("h", b"1")])
        for i, v in enumerate([event(T1 // 10**6), b"{}", event(T1 // 10**6 + 6 * 60_000)])
    ]
    commit = asyncio.run(ingest.process({TopicPartition(cfg.topic, 0): recs}))
    assert commit == {TopicPartition(cfg.topic, 0): 3}
    dlq = [(k, v) for t, _, k, v in sender.out if t == cfg.dlq_topic]
    assert dlq == [(b"k", b"{}"), (b"k", recs[2].value)]  # byte for byte, with their keys
    entries = [e for t, _, _, v in sender.out if t == cfg.repartition_topic for e in records.unpack(None, v)]
    assert sorted(e.src_offset for e in entries) == [0, 1, 2]


def test_merged_totals_cached_between_batches_and_fresh_after_each() -> None:
    cfg = WorkerConfig()
    proc = StateProcessor(cfg, ListSender(), WorkerStats(CollectorRegistry()))  # type: ignore[arg-type]
    proc.owned[0] = OwnedPartition(0, MemoryStore(), AdoptionTotals())
    assert proc.merged_totals().outcomes.get("accepted", 0) == 0
    first = proc.merged_totals()
    assert proc.merged_totals() is first  # no batch in between: the same merge
    key, value = ingest_twice(event((T1 - MINUTE) // 10**6), T1, T1)[0]
    rec = ConsumerRecord(cfg.repartition_topic, 0, 0, 0, 0, key, value, None, 0, 0, [])
    asyncio.run(proc.process({TopicPartition(cfg.repartition_topic, 0): [rec]}))
    after = proc.merged_totals()
    assert after is not first and after.outcomes["accepted"] == 1
    proc.owned[1] = OwnedPartition(1, MemoryStore(), AdoptionTotals())
    proc.revoke([1])  # an assignment change invalidates too
    assert proc.merged_totals() is not after and proc.merged_totals().outcomes["accepted"] == 1
