"""Stage 1: read the input topic with any partitioning, validate, and re-key every message by user.

Valid events go to the by-user topic, partitioned by user, packed many to a record (records.py);
invalid and future messages go byte for byte (key and value) to the dead-letter topic with the
reason in a header, and a small rejection entry goes to the by-user topic so that the outcome
counts stay exact. Input offsets are committed only after every output is acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain

from aiokafka import ConsumerRecord, TopicPartition

from adoptstream.core.entries import Entry, EventEntry, FutureEntry, InvalidEntry, event_entry
from adoptstream.core.events import InvalidEvent, Outcome, future_horizon_ns, parse_event
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stats import WorkerStats

log = logging.getLogger(__name__)

REASON_HEADER = "adoptstream-reason"
OUTCOME_HEADER = "adoptstream-outcome"
SOURCE_HEADER = "adoptstream-source"


@dataclass(slots=True)
class DeadLetter:
    """A rejected input message: it goes byte for byte to the dead-letter topic with its reason."""

    record: ConsumerRecord
    outcome: Outcome
    reason: str


@dataclass(slots=True)
class Routed:
    """Where the messages of one batch go."""

    by_user: dict[int, list[Entry]]  # by-user partition -> its entries, in input order
    dead_letters: list[DeadLetter]


def route(messages: Iterable[ConsumerRecord], by_user_partitions: int, now_ns: int) -> Routed:
    """Validate every input message and re-key it by user: the ingest stage without its I/O.

    `now_ns` is the monitor's clock: it decides the future rule and stamps every entry's arrival.
    """
    horizon_ns = future_horizon_ns(now_ns)
    arrival_ms = now_ns // 1_000_000
    n = by_user_partitions
    partition_of = records.user_partition
    by_user: dict[int, list[Entry]] = {}
    dead: list[DeadLetter] = []
    for rec in messages:
        try:
            event = parse_event(rec.value)
        except InvalidEvent as exc:
            dead.append(DeadLetter(rec, Outcome.INVALID, f"invalid: {exc.reason}"))
            entry: Entry = InvalidEntry(rec.partition, rec.offset, arrival_ms)
            partition = records.rejection_partition(rec.partition, n)
        else:
            user_id = event.user_id
            if event.ts_ns > horizon_ns:
                dead.append(DeadLetter(rec, Outcome.FUTURE, "future: ts more than 5 minutes ahead"))
                entry = FutureEntry(rec.partition, rec.offset, arrival_ms, user_id)
            elif event.duration_ms is None and event.scale is None:  # event_entry(), written out
                entry = EventEntry(
                    rec.partition,
                    rec.offset,
                    arrival_ms,
                    user_id,
                    event.event_id,
                    event.type,
                    event.feature,
                    event.ts_ns,
                    event.cohort,
                )
            else:
                entry = event_entry(event, rec.partition, rec.offset, arrival_ms)
            partition = partition_of(user_id, n)
        pack = by_user.get(partition)
        if pack is None:
            by_user[partition] = [entry]
        else:
            pack.append(entry)
    return Routed(by_user, dead)


class Ingest:
    """Turns one batch of input records into by-user and dead-letter records."""

    def __init__(
        self,
        config: WorkerConfig,
        sender: BatchSender,
        stats: WorkerStats,
        by_user_partitions: int,
        dlq_partitions: int,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._sender = sender
        self._stats = stats
        self._by_user = by_user_partitions
        self._dlq_partitions = dlq_partitions
        self._clock_ns = clock_ns

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
        """Route every record, wait for the acks, and return the offsets to commit."""
        started = time.perf_counter()
        now_ns = self._clock_ns()
        routed = route(chain.from_iterable(batch.values()), self._by_user, now_ns)
        out_topic, append = self._config.repartition_topic, self._sender.append
        arrival_ms = now_ns // 1_000_000
        for partition, entries in routed.by_user.items():
            for value in records.packs(entries):  # CreateTime: when this batch arrived
                append(out_topic, partition, None, value, timestamp_ms=arrival_ms)
        dlq, dlq_partitions = self._config.dlq_topic, self._dlq_partitions
        rejected = {Outcome.INVALID: 0, Outcome.FUTURE: 0}
        for dead in routed.dead_letters:
            rec = dead.record
            headers = [
                *(rec.headers or ()),
                (REASON_HEADER, dead.reason[:1000].encode()),
                (OUTCOME_HEADER, dead.outcome.value.encode()),
                (SOURCE_HEADER, f"{rec.topic}/{rec.partition}/{rec.offset}".encode()),
            ]
            append(dlq, rec.partition % dlq_partitions, rec.key, rec.value, headers)
            rejected[dead.outcome] += 1
        await self._sender.flush()
        stats = self._stats
        stats.processed.labels("ingest").inc(sum(len(recs) for recs in batch.values()))
        for outcome, count in rejected.items():
            if count:
                stats.dead_letters.labels(outcome.value).inc(count)
        stats.batch_duration.labels("ingest").observe(time.perf_counter() - started)
        return {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
