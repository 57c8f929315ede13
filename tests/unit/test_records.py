"""By-user records: packs of entries, their limits, and the one-message records written before packing."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry
from test_runtime_replay import ListSender

from adoptstream.core.events import Event, Outcome
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.ingest import Ingest
from adoptstream.runtime.stats import WorkerStats

EVENT = Event("e1", "alice", "use", "search", 1_717_200_000 * 10**9, "wave-1")


def test_packs_split_at_the_limit_and_keep_order() -> None:
    entries = [records.event_entry(EVENT, 0, i, 5) for i in range(2 * records.PACK_MAX_ENTRIES + 3)]
    values = records.packs(entries)
    assert [len(orjson.loads(v)) for v in values] == [records.PACK_MAX_ENTRIES, records.PACK_MAX_ENTRIES, 3]
    assert [e for v in values for e in records.unpack(None, v)] == entries
    assert records.packs([]) == []


def test_largest_pack_fits_one_producer_batch() -> None:
    big = Event("e" * 128, "u" * 256, "exposure", "f" * 128, -(2**70), "c" * 64)  # wide int: stdlib JSON
    (value,) = records.packs([records.event_entry(big, 2**31 - 1, 2**62, 2**41)] * records.PACK_MAX_ENTRIES)
    assert len(value) < 512 * 1024
    assert records.decode(records.unpack(None, value)[0]) == records.EventRecord(2**31 - 1, 2**62, 2**41, big)


def test_entries_decode_to_records() -> None:
    assert records.decode(records.event_entry(EVENT, 3, 7, 9)) == records.EventRecord(3, 7, 9, EVENT)
    future = records.rejection_entry(Outcome.FUTURE, 1, 2, 3, "bob")
    assert records.decode(future) == records.RejectionRecord(1, 2, 3, Outcome.FUTURE, "bob")
    invalid = records.rejection_entry(Outcome.INVALID, 1, 4, 3)
    assert records.decode(invalid) == records.RejectionRecord(1, 4, 3, Outcome.INVALID, None)


def test_one_message_records_of_before_packing_still_read() -> None:
    old_event = orjson.dumps([3, 7, 9, "e1", 2, "search", EVENT.ts_ns, "wave-1"])
    assert records.unpack(b"alice", old_event) == [records.event_entry(EVENT, 3, 7, 9)]
    old_future = orjson.dumps([1, 2, 3, 1])
    assert records.unpack(b"bob", old_future) == [records.rejection_entry(Outcome.FUTURE, 1, 2, 3, "bob")]
    old_invalid = orjson.dumps([1, 4, 3, 0])
    assert records.unpack(None, old_invalid) == [records.rejection_entry(Outcome.INVALID, 1, 4, 3)]


def test_ingest_packs_each_by_user_partition_and_routes_every_message() -> None:
    cfg = WorkerConfig()
    sender = ListSender()
    ingest = Ingest(cfg, sender, WorkerStats(CollectorRegistry()), by_user_partitions=4, dlq_partitions=1)  # type: ignore[arg-type]
    values = [
        orjson.dumps({"event_id": f"e{i}", "user_id": f"u{i % 50}", "type": "use", "feature": "f", "ts": 9})
        for i in range(1200)
    ] + [b"not json"]
    recs = [ConsumerRecord(cfg.topic, 0, i, 0, 0, None, v, None, 0, len(v), []) for i, v in enumerate(values)]
    asyncio.run(ingest.process({TopicPartition(cfg.topic, 0): recs}))
    by_user = [(p, records.unpack(k, v)) for t, p, k, v in sender.out if t == cfg.repartition_topic]
    assert all(len(entries) <= records.PACK_MAX_ENTRIES for _, entries in by_user)
    seen = sorted(e[1] for _, entries in by_user for e in entries)
    assert seen == list(range(1201))  # every input message exactly once
    for p, entries in by_user:
        for e in entries:
            owner = records.rejection_partition(0, 4) if e[3] is None else records.user_partition(e[3], 4)
            assert p == owner
        offsets = [e[1] for e in entries]
        assert offsets == sorted(offsets)  # input order kept inside each pack
    assert len(by_user) < 20  # packed: a handful of records, not one per message
