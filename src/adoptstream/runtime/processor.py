"""Stage 2: apply by-user entries to exact per-user state, durable through a compacted changelog.

Per batch and partition: every touched user is loaded once, its old contribution is taken out of the
partition's totals, its entries are applied (replays skipped by source offset), its new contribution
is put back, and its state is written once to the changelog. Only after the changelog acknowledged
everything are the local store and the input offsets advanced, so a crash at any point loses nothing
and counts nothing twice.

The totals are derived from the stored states when a partition is assigned; a RocksDB store's
snapshot of them (see `store`) makes that a read of the snapshot plus the changelog tail after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adoptstream.core.codec import dumps, loads
from adoptstream.core.events import Outcome
from adoptstream.core.state import SourceOutcomes, UserState, UserSummary
from adoptstream.core.totals import AdoptionTotals
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.connection import client_options
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stats import WorkerStats
from adoptstream.runtime.store import (
    CHANGELOG_ID_KEY,
    META_PREFIX,
    USER_PREFIX,
    PartitionStore,
    Snapshot,
    State,
    decode_for_totals,
    discard_store,
    open_store,
    source_key,
)
from adoptstream.runtime.topics import RESET_HINT, TopicLayout, TopicMismatch

log = logging.getLogger(__name__)
RESTORE_CHUNK = 50_000
SOURCE_KEY = META_PREFIX + b"source"  # in each changelog partition: the topics its states were built from


@dataclass(slots=True)
class OwnedPartition:
    """A by-user partition this worker owns: its store and the totals derived from it."""

    partition: int
    store: PartitionStore
    totals: AdoptionTotals
    settled: bool = True  # totals match the stored states (not between a batch's apply and save)

    def snapshot(self) -> Callable[[], bytes] | None:
        """What the store may write as its totals snapshot now, if anything."""
        return self.totals.encode if self.settled else None


class StateProcessor:
    """Owns the state of the assigned by-user partitions.

    `layout` (the topics found at start) lets the assignment check that a partition's state was built
    from these topics; without it (tests, benches) nothing is checked.
    """

    def __init__(
        self,
        config: WorkerConfig,
        sender: BatchSender,
        stats: WorkerStats,
        layout: TopicLayout | None = None,
    ) -> None:
        self._config = config
        self._sender = sender
        self._stats = stats
        self._layout = layout
        self.owned: dict[int, OwnedPartition] = {}
        self.restoring = False
        self._version = 0  # bumped whenever any owned totals may change
        self._merged: tuple[int, AdoptionTotals] | None = None

    # -- assignment -------------------------------------------------------------------------------

    async def assign(self, partitions: list[int], reset: Collection[int] = ()) -> dict[int, Exception]:
        """Open, restore from the changelog and check newly assigned partitions; return those that failed.

        A partition that failed is not owned (its store is closed again), so none of its records can be
        applied; the caller tries it again later. The error says why: the local store (`is_store_error`:
        a disk full or unwritable), the changelog (a Kafka error), or a topic that is not the one the
        state was built from (`TopicMismatch`). `reset`: partitions the state group has no offsets of
        (a new or reset app), whose local store may be discarded when it mirrors another changelog.
        """
        new = [p for p in sorted(partitions) if p not in self.owned]
        failed: dict[int, Exception] = {}
        if not new:
            return failed
        self.restoring = True
        started = time.perf_counter()
        stores: dict[int, PartitionStore] = {}
        try:
            for p in new:
                try:
                    stores[p] = self._open(p, p in reset)
                except Exception as exc:
                    failed[p] = exc
            snapshots = {p: t for p, store in stores.items() if (t := _snapshot_of(p, store)) is not None}
            try:
                failed.update(await self._restore(stores, snapshots))
            except Exception as exc:  # the changelog could not be read, or the store not written
                failed.update({p: exc for p in stores if p not in failed})
            for p, store in stores.items():
                if p not in failed:
                    try:
                        await self._check_source(p, store)
                        totals = snapshots.get(p)
                        if totals is None:
                            totals = AdoptionTotals()
                            for key, state in store.summaries():
                                _add_stored(totals, key, state)
                    except Exception as exc:
                        failed[p] = exc
                    else:
                        self.owned[p] = OwnedPartition(p, store, totals)
                        self._version += 1
                        continue
                _close_quietly(p, store)
        finally:
            self.restoring = False
            self._stats.restore_duration_s = time.perf_counter() - started
        ready = [p for p in new if p not in failed]
        if ready:
            log.info("state partitions %s ready in %.2fs", ready, self._stats.restore_duration_s)
        return failed

    def _open(self, partition: int, reset: bool) -> PartitionStore:
        """The partition's local store, checked to mirror the changelog topic that exists now.

        One that mirrors another changelog is discarded when the app was reset (`reset`: its groups are
        gone too, `adoptstream reset`); otherwise neither can be trusted over the other.
        """
        config = self._config
        store = open_store(config.store, config.state_dir, partition)
        changelog_id = self._layout.ids.get(config.changelog_topic) if self._layout else None
        if changelog_id is None:
            return store
        mirrored = store.meta(CHANGELOG_ID_KEY)
        if mirrored is not None and mirrored.decode() != changelog_id and reset:
            log.warning(
                "state partition %d: the app was reset (no committed offsets, a new changelog): the local "
                "store of before is discarded",
                partition,
            )
            store.close()  # just opened: nothing to flush
            discard_store(config.store, config.state_dir, partition)
            store, mirrored = open_store(config.store, config.state_dir, partition), None
        if mirrored is None:
            store.set_meta(CHANGELOG_ID_KEY, changelog_id.encode())
        elif mirrored.decode() != changelog_id:
            _close_quietly(partition, store)
            raise TopicMismatch(
                f"state partition {partition}: the local store in {self._config.state_dir} mirrors changelog "
                f"{self._config.changelog_topic} with id {mirrored.decode()}, but that topic now has id "
                f"{changelog_id}: it was recreated, and the two no longer tell the same state; " + RESET_HINT
            )
        return store

    async def _check_source(self, partition: int, store: PartitionStore) -> None:
        """The partition's state was built from these topics: the same input topic (by id) and the same
        by-user partition count. Recorded in the changelog the first time (`SOURCE_KEY`)."""
        if self._layout is None:
            return
        config = self._config
        want = {
            "input_topic": config.topic,
            "input_topic_id": self._layout.ids.get(config.topic),
            "by_user_partitions": self._layout.by_user_partitions,
        }
        recorded = store.meta(SOURCE_KEY)
        if recorded is None:
            value = dumps(want)
            self._sender.append(config.changelog_topic, partition, SOURCE_KEY, value)
            await self._sender.flush()
            store.set_meta(SOURCE_KEY, value)
            return
        have = loads(recorded)
        if have.get("by_user_partitions") != want["by_user_partitions"]:
            raise TopicMismatch(
                f"state partition {partition} was built with {have.get('by_user_partitions')} by-user "
                f"partitions, but {config.repartition_topic} now has {want['by_user_partitions']}: users "
                "would be split between partitions and counted twice; " + RESET_HINT
            )
        if (
            None not in (have.get("input_topic_id"), want["input_topic_id"])
            and have.get("input_topic_id") != want["input_topic_id"]
        ):
            raise TopicMismatch(
                f"state partition {partition} was built from input topic {config.topic} with id "
                f"{have.get('input_topic_id')}, but that topic now has id {want['input_topic_id']}: it was "
                "recreated, its offsets started again, and its new events would be taken for replays; "
                + RESET_HINT
            )

    def revoke(self, partitions: list[int], flush: bool = True) -> None:
        """Forget partitions that moved to another worker (local RocksDB files stay for next time).

        A store that cannot be flushed (a full disk: `flush` false) is closed anyway: what it held comes
        back from the changelog at the next assignment.
        """
        for p in partitions:
            owned = self.owned.pop(p, None)
            if owned is not None:
                self._version += 1
                _close_quietly(p, owned.store, owned.snapshot(), flush)

    def close(self) -> None:
        self.revoke(list(self.owned))

    def idle(self) -> None:
        """Nothing to process: let the stores do their periodic work (RocksDB memtable flushes)."""
        for owned in self.owned.values():
            owned.store.maybe_flush(owned.snapshot(), idle=True)

    async def _restore(
        self, stores: dict[int, PartitionStore], snapshots: dict[int, AdoptionTotals]
    ) -> dict[int, Exception]:
        """Bring every store up to its changelog's end: one consumer reads all partitions at once.

        The totals in `snapshots` (those of the stored states) are brought along with the records read.
        Returns the partitions whose store is ahead of the changelog (which was recreated or lost
        records): neither can be trusted over the other, and they are not read.
        """
        topic = self._config.changelog_topic
        failed: dict[int, Exception] = {}
        if not stores:
            return failed
        consumer = AIOKafkaConsumer(
            **client_options(self._config),
            enable_auto_commit=False,
            client_id=f"{self._config.app_id}-restore",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tps = {TopicPartition(topic, p): store for p, store in stores.items()}
            consumer.assign(list(tps))
            ends = await consumer.end_offsets(list(tps))
            begins = await consumer.beginning_offsets(list(tps))
            pending: dict[TopicPartition, tuple[int, int]] = {}  # tp -> (first offset to read, end)
            for tp, store in tps.items():
                start, end = store.changelog_offset + 1, ends[tp]
                if start > end:
                    failed[tp.partition] = TopicMismatch(
                        f"state partition {tp.partition}: the local store in {self._config.state_dir} "
                        f"holds the changelog up to offset {start - 1}, but {topic} ends at {end}: the "
                        "changelog was recreated or lost records, and the two no longer tell the same "
                        "state; " + RESET_HINT
                    )
                    consumer.pause(tp)
                    continue
                start = max(start, begins[tp])
                if start < end:
                    consumer.seek(tp, start)
                    pending[tp] = (start, end)
                else:
                    consumer.pause(tp)
            total = sum(end - start for start, end in pending.values())
            chunks: dict[TopicPartition, dict[bytes, bytes]] = {tp: {} for tp in pending}
            read = 0
            report_at = time.monotonic() + 5.0
            while pending:
                if time.monotonic() > report_at:  # long restores say how far they are
                    log.info(
                        "restoring %d partitions: %d of %d changelog records read", len(tps), read, total
                    )
                    report_at += 5.0
                fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=RESTORE_CHUNK)
                for tp, recs in fetched.items():
                    chunk = chunks[tp]
                    for rec in recs:
                        if rec.value is not None:
                            chunk[rec.key] = rec.value
                    read += len(recs)
                    last, end = recs[-1].offset, pending[tp][1]
                    if len(chunk) >= RESTORE_CHUNK or last >= end - 1:
                        store = tps[tp]
                        for key in [k for k in chunk if k[:1] == META_PREFIX]:
                            store.set_meta(key, chunk.pop(key))
                        totals = snapshots.get(tp.partition)
                        if totals is not None:
                            replace_in_totals(totals, store, chunk)
                        store.save_raw(chunk, last)
                        self._stats.restored_records.inc(len(chunk))
                        chunks[tp] = {}
                    if last >= end - 1:
                        log.info(
                            "partition %d: restored changelog offsets %d..%d",
                            tp.partition,
                            pending[tp][0],
                            last,
                        )
                        del pending[tp]
                        consumer.pause(tp)
        finally:
            await consumer.stop()
        return failed

    # -- processing -------------------------------------------------------------------------------

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
        """Apply one batch; return the by-user offsets that are now safe to commit."""
        started = time.perf_counter()
        changelog = self._config.changelog_topic
        saved: list[tuple[OwnedPartition, list[bytes], list[State], list[bytes]]] = []
        commit: dict[TopicPartition, int] = {}
        total = 0
        last_ts = self._stats.last_event_ts_ns
        for tp, recs in batch.items():
            partition = tp.partition
            owned = self.owned.get(partition)
            if owned is None:
                continue  # revoked while fetched
            owned.settled = False
            keys, states, values, ts, count = self._apply(owned, recs)
            if ts is not None and (last_ts is None or ts > last_ts):
                last_ts = ts
            self._sender.extend(changelog, partition, keys, values)
            saved.append((owned, keys, states, values))
            commit[tp] = recs[-1].offset + 1
            total += count
        sent = await self._sender.flush()
        last_offsets: dict[int, int] = {}
        for b in sent:
            last_offsets[b.partition] = max(last_offsets.get(b.partition, -1), b.last_offset)
        for owned, keys, states, values in saved:
            if keys:
                owned.store.save(keys, states, values, last_offsets[owned.partition])
            owned.settled = True
            owned.store.maybe_flush(owned.snapshot())
        stats = self._stats
        stats.last_event_ts_ns = last_ts
        stats.last_processed_s = time.time()
        stats.processed.labels("state").inc(total)
        stats.batch_duration.labels("state").observe(time.perf_counter() - started)
        return commit

    def _apply(
        self, owned: OwnedPartition, recs: list[ConsumerRecord]
    ) -> tuple[list[bytes], list[State], list[bytes], int | None, int]:
        """Apply records to their states in place.

        Returns the touched states with their store keys and encoded values, the max accepted event
        time and the number of entries. One pass in offset order: a user's state is loaded (and its
        old contribution taken out of the totals) at its first entry in the batch; its new
        contribution is put back once, after the batch, so every touched state is loaded, updated
        and written exactly once per batch. (Grouping the entries by user first, to do each user's
        work in one go, measured no faster: more instructions and more cache misses.) Outcomes are
        counted as they are given (a replay gets none).
        """
        self._version += 1  # the totals change below
        totals = owned.totals
        load, add_adoption = owned.store.load, totals.add_adoption
        types = records.EVENT_TYPES
        accepted = Outcome.ACCEPTED
        users: dict[str, UserState] = {}
        keys: list[bytes] = []
        invalid: list[records.Entry] = []
        max_ts = -1 << 127
        count = n_accepted = n_duplicate = n_future = 0
        for rec in recs:
            entries = records.unpack(rec.key, rec.value)
            count += len(entries)
            for entry in entries:
                user_id = entry[3]
                if user_id is None:  # an invalid message, counted per input partition
                    invalid.append(entry)
                    continue
                user = users.get(user_id)
                if user is None:  # first touch in this batch: its old contribution leaves the totals
                    key = USER_PREFIX + user_id.encode()  # user_key()
                    user = load(key)
                    if user is None:
                        user = UserState()
                    else:
                        add_adoption(user, -1)
                    users[user_id] = user
                    keys.append(key)
                src_partition, src_offset = entry[0], entry[1]
                last = user.sources.get(src_partition)  # UserState.is_replay()
                if last is not None and src_offset <= last:
                    continue
                if len(entry) == 5:  # a future message of this user
                    user.reject_future(src_partition, src_offset)
                    n_future += 1
                    continue
                _, _, arrival_ms, _, event_id, tcode, feature, ts_ns, cohort = entry
                if (
                    user.apply_fields(
                        event_id, types[tcode], feature, ts_ns, cohort, arrival_ms, src_partition, src_offset
                    )
                    is accepted
                ):
                    n_accepted += 1
                    if ts_ns > max_ts:
                        max_ts = ts_ns
                else:
                    n_duplicate += 1
        states: list[State] = list(users.values())  # in first-touch order, like keys
        values: list[bytes] = []
        for user in states:
            if len(user.seen) > 1:  # type: ignore[union-attr]
                user.prune_seen()  # type: ignore[union-attr]
            add_adoption(user)  # type: ignore[arg-type]
            values.append(user.encode())
        outcomes = totals.outcomes
        outcomes["accepted"] += n_accepted
        outcomes["duplicate"] += n_duplicate
        if n_future:
            outcomes["future"] += n_future
        if invalid:
            self._apply_invalid(owned, invalid, keys, states, values)
        return keys, states, values, None if max_ts == -1 << 127 else max_ts, count

    @staticmethod
    def _apply_invalid(
        owned: OwnedPartition,
        entries: list[records.Entry],
        keys: list[bytes],
        states: list[State],
        values: list[bytes],
    ) -> None:
        load, totals = owned.store.load, owned.totals
        sources: dict[bytes, SourceOutcomes] = {}
        for src_partition, src_offset, _, _, code in entries:
            key = source_key(src_partition)
            source = sources.get(key)
            if source is None:  # its old contribution leaves the totals
                source = load(key)
                if source is None:
                    source = SourceOutcomes()
                else:
                    totals.add_source(source, -1)  # type: ignore[arg-type]
                sources[key] = source  # type: ignore[assignment]
            source.apply(records.REJECTED[code], src_offset)
        for key, source in sources.items():
            totals.add_source(source)
            keys.append(key)
            states.append(source)
            values.append(source.encode())

    def partition_totals(self) -> list[AdoptionTotals]:
        """The totals of every owned partition (what `merged_totals` adds up); read only."""
        return [owned.totals for owned in list(self.owned.values())]

    def merged_totals(self) -> AdoptionTotals:
        """The totals of every owned partition, added up (what this worker exports); read only.

        Cached until the next batch or assignment change: the scrapes between two batches share one
        merge, which with a month of hourly active-user buckets is most of a scrape's cost.
        """
        cached = self._merged
        if cached is not None and cached[0] == self._version:
            return cached[1]
        merged = AdoptionTotals()
        for owned in list(self.owned.values()):
            merged.merge(owned.totals)
        self._merged = (self._version, merged)
        return merged


def _snapshot_of(partition: int, store: PartitionStore) -> AdoptionTotals | None:
    """The totals of `store`'s states from its snapshot, or None: they are derived from the states."""
    try:
        blob = store.totals_snapshot()
        if blob is None:
            return None
        totals = AdoptionTotals.decode(blob)
    except (ValueError, TypeError) as exc:  # unreadable (another version)
        log.warning("partition %d: totals snapshot not used (%s)", partition, exc)
        return None
    if store.changelog_offset >= 0:
        log.info("partition %d: totals from its snapshot at offset %d", partition, store.changelog_offset)
    return totals


def _close_quietly(
    partition: int, store: PartitionStore, totals: Snapshot | None = None, flush: bool = True
) -> None:
    """Close a store whatever happens (a full disk fails its last flush): the changelog has it all."""
    try:
        store.close(totals, flush)
    except Exception as exc:
        log.warning("state partition %d: store closed without its last flush (%s)", partition, exc)


def replace_in_totals(totals: AdoptionTotals, store: PartitionStore, values: dict[bytes, bytes]) -> None:
    """Update the totals of `store`'s states for `values` about to overwrite them (a changelog tail)."""
    for key, value in values.items():
        old = store.load(key)
        if old is not None:
            _add_stored(totals, key, old, -1)
        _add_stored(totals, key, decode_for_totals(key, value))


def _add_stored(totals: AdoptionTotals, key: bytes, state: State | UserSummary, sign: int = 1) -> None:
    if key[:1] == USER_PREFIX:
        totals.add_user(state, sign)  # type: ignore[arg-type]
    else:
        totals.add_source(state, sign)  # type: ignore[arg-type]
