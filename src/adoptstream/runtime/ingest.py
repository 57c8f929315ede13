"""Stage 1: read the input topic with any partitioning, validate, and re-key every message by user.

Valid events go to the by-user topic, partitioned by user, packed many to a record (records.py);
invalid and future messages go byte for byte (key and value) to the dead-letter topic with the
reason in a header, and a small rejection entry goes to the by-user topic so that the outcome
counts stay exact. Input offsets are committed only after every output is acknowledged.
"""

from __future__ import annotations

import logging
import time

from aiokafka import ConsumerRecord, TopicPartition

from adoptstream.core.events import InvalidEvent, Outcome, future_horizon_ns, parse_fields
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stats import WorkerStats

log = logging.getLogger(__name__)

REASON_HEADER = "adoptstream-reason"
OUTCOME_HEADER = "adoptstream-outcome"
SOURCE_HEADER = "adoptstream-source"


class Ingest:
    """Turns one batch of input records into by-user and dead-letter records."""

    def __init__(
        self,
        config: WorkerConfig,
        sender: BatchSender,
        stats: WorkerStats,
        by_user_partitions: int,
        dlq_partitions: int,
    ) -> None:
        self._config = config
        self._sender = sender
        self._stats = stats
        self._by_user = by_user_partitions
        self._dlq_partitions = dlq_partitions

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
        """Route every record, wait for the acks, and return the offsets to commit."""
        started = time.perf_counter()
        now_ns = time.time_ns()
        horizon_ns = future_horizon_ns(now_ns)
        arrival_ms = now_ns // 1_000_000
        n = self._by_user
        partition_of, fields_entry = records.user_partition, records.fields_entry
        packs: dict[int, list[records.Entry]] = {}  # by-user partition -> entries, in input order
        rejected = {Outcome.INVALID: 0, Outcome.FUTURE: 0}
        commit: dict[TopicPartition, int] = {}
        total = 0
        for tp, recs in batch.items():
            src = tp.partition
            for rec in recs:
                try:
                    fields = parse_fields(rec.value)
                except InvalidEvent as exc:
                    self._reject(packs, rec, Outcome.INVALID, f"invalid: {exc.reason}", arrival_ms)
                    rejected[Outcome.INVALID] += 1
                    continue
                if fields[4] > horizon_ns:  # ts_ns
                    reason = "future: ts more than 5 minutes ahead"
                    self._reject(packs, rec, Outcome.FUTURE, reason, arrival_ms, fields[1])
                    rejected[Outcome.FUTURE] += 1
                    continue
                entry = fields_entry(fields, src, rec.offset, arrival_ms)
                partition = partition_of(entry[3], n)
                pack = packs.get(partition)
                if pack is None:
                    packs[partition] = [entry]
                else:
                    pack.append(entry)
            commit[tp] = recs[-1].offset + 1
            total += len(recs)
        out_topic, append = self._config.repartition_topic, self._sender.append
        for partition, entries in packs.items():
            for value in records.packs(entries):  # CreateTime: when this batch arrived
                append(out_topic, partition, None, value, timestamp_ms=arrival_ms)
        await self._sender.flush()
        stats = self._stats
        stats.processed.labels("ingest").inc(total)
        for outcome, count in rejected.items():
            if count:
                stats.dead_letters.labels(outcome.value).inc(count)
        stats.batch_duration.labels("ingest").observe(time.perf_counter() - started)
        return commit

    def _reject(
        self,
        packs: dict[int, list[records.Entry]],
        rec: ConsumerRecord,
        outcome: Outcome,
        reason: str,
        arrival_ms: int,
        user_id: str | None = None,
    ) -> None:
        headers = [
            *(rec.headers or ()),
            (REASON_HEADER, reason[:1000].encode()),
            (OUTCOME_HEADER, outcome.value.encode()),
            (SOURCE_HEADER, f"{rec.topic}/{rec.partition}/{rec.offset}".encode()),
        ]
        self._sender.append(
            self._config.dlq_topic, rec.partition % self._dlq_partitions, rec.key, rec.value, headers
        )
        if user_id is None:  # invalid: counted per input partition
            partition = records.rejection_partition(rec.partition, self._by_user)
        else:  # future: counted in the user's state
            partition = records.user_partition(user_id, self._by_user)
        entry = records.rejection_entry(outcome, rec.partition, rec.offset, arrival_ms, user_id)
        packs.setdefault(partition, []).append(entry)
