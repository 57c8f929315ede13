"""The worker's two stages driven in-process (no broker), for deterministic cost per event.

    .venv/bin/python bench/stages.py [--events 20000] [--store rocksdb|memory] [--stop none|ingest|prep|both]
    bench/stage_instructions.sh [EVENTS]     # instructions per event of each stage, under callgrind

Real `Ingest` and `StateProcessor` code, real stores, real `BatchSender` over aiokafka's own
`BatchBuilder`; only the network send is replaced (it 'acks' at once). Input: the first --events
lines of `make bench`'s data set. `--stop` ends the run after a phase, so that the difference of two
runs under `valgrind --tool=callgrind` is one stage's instruction count (repeatable on a busy box,
where CPU time moves by tens of percent).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from aiokafka import TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from adoptstream.core.state import DAY_NS
from adoptstream.core.totals import AdoptionTotals
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.ingest import Ingest
from adoptstream.runtime.processor import OwnedPartition, StateProcessor
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stats import WorkerStats
from adoptstream.runtime.store import open_store
from adoptstream.runtime.worker import tune_gc

BATCH = 20_000
PARTITIONS = 8


class _Acked:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class LoopbackProducer:
    """`create_batch` is aiokafka's; `send_batch` acknowledges at once with consecutive offsets."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(512 * 1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, partition: int) -> asyncio.Future:
        base = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = base + batch.record_count()
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(_Acked(base))
        return fut


class ListSender:
    """Keeps what a stage sends (to feed the next stage); not measured."""

    def __init__(self) -> None:
        self.out: list[tuple[str, int, bytes | None, bytes | None]] = []

    def append(self, topic, partition, key, value, headers=(), timestamp_ms=None) -> None:
        self.out.append((topic, partition, key, value))

    async def flush(self) -> list:
        return []


def record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(
        topic, partition, offset, 0, 0, key, value, None, len(key or b""), len(value or b""), ()
    )


def batches(
    recs: list[ConsumerRecord], size: int = BATCH
) -> Iterator[dict[TopicPartition, list[ConsumerRecord]]]:
    """`getmany`-shaped batches of at most `size` records (the worker's limits: see Worker.run)."""
    for i in range(0, len(recs), size):
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        for r in recs[i : i + size]:
            batch.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        yield batch


async def run(lines: list[bytes], store: str, stop: str) -> None:
    tune_gc()
    cfg = WorkerConfig(data_dir=Path(tempfile.mkdtemp(prefix="adoptstream-stages-")), store=store, topic="in")
    stats = WorkerStats(CollectorRegistry())
    inputs = [record(cfg.topic, i % PARTITIONS, i // PARTITIONS, None, v) for i, v in enumerate(lines)]
    if stop == "none":
        return
    ingest = Ingest(cfg, BatchSender(LoopbackProducer()), stats, PARTITIONS, PARTITIONS)  # type: ignore[arg-type]
    c0 = time.process_time()
    for batch in batches(inputs):
        await ingest.process(batch)
    c1 = time.process_time()
    if stop == "ingest":
        print(f"ingest {1e6 * (c1 - c0) / len(lines):.2f} us/event CPU")
        return
    lister = ListSender()
    feeder = Ingest(cfg, lister, stats, PARTITIONS, PARTITIONS)  # type: ignore[arg-type]
    for batch in batches(inputs):
        await feeder.process(batch)
    offsets = [0] * PARTITIONS
    by_user = []
    for topic, p, key, value in lister.out:
        if topic == cfg.repartition_topic:
            by_user.append(record(topic, p, offsets[p], key, value))
            offsets[p] += 1
    proc = StateProcessor(cfg, BatchSender(LoopbackProducer()), stats)  # type: ignore[arg-type]
    for p in range(PARTITIONS):
        totals = AdoptionTotals()
        totals.advance(time.time_ns() // DAY_NS)  # what StateProcessor.assign does
        proc.owned[p] = OwnedPartition(p, open_store(store, cfg.state_dir, p), totals)
    if stop == "prep":
        return
    c2 = time.process_time()
    for batch in batches(by_user, max(1, BATCH // records.PACK_MAX_ENTRIES)):
        await proc.process(batch)
    c3 = time.process_time()
    n = len(lines)
    print(f"{store}: ingest {1e6 * (c1 - c0) / n:.2f}, state {1e6 * (c3 - c2) / n:.2f} us/event CPU")
    print("outcomes", dict(proc.merged_totals().outcomes))
    proc.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--store", choices=["rocksdb", "memory"], default="rocksdb")
    p.add_argument("--stop", choices=["none", "ingest", "prep", "both"], default="both")
    args = p.parse_args()
    lines, _ = common.load_events(200_000, 1_000_000, 4)  # make bench's data set (cached in bench/out)
    asyncio.run(run(lines[: args.events], args.store, args.stop))


if __name__ == "__main__":
    main()
