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
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adoptstream.core.codec import dumps, loads
from adoptstream.core.dedup import DEDUP_PREFIX, INLINE_SEEN_MAX, SeenShards
from adoptstream.core.entries import InvalidEntry
from adoptstream.core.events import Outcome
from adoptstream.core.state import DAY_NS, DEDUP_WINDOW_MS, SourceOutcomes, UserState, UserSummary
from adoptstream.core.totals import AdoptionTotals, DatesOfUse
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.connection import client_options
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stats import WorkerStats
from adoptstream.runtime.store import (
    CHANGELOG_ID_KEY,
    META_PREFIX,
    SOURCE_PREFIX,
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
_ACCEPTED, _DUPLICATE, _FUTURE = Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.FUTURE


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
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._sender = sender
        self._stats = stats
        self._layout = layout
        self._clock_ns = clock_ns
        self.owned: dict[int, OwnedPartition] = {}
        self.restoring = False
        self._version = 0  # bumped whenever any owned totals may change
        self._merged: tuple[int, AdoptionTotals] | None = None
        self._today = clock_ns() // DAY_NS

    def _turn_of_day(self) -> None:
        """At a new UTC date, drop from every partition's totals what no period reaches any more.

        The periods themselves move on at scrape time (the totals are keyed by date): this only keeps
        the date-keyed counts bounded, and costs a pass over them, not over the users.
        """
        today = self._clock_ns() // DAY_NS
        if today != self._today:
            self._today = today
            for owned in self.owned.values():
                owned.totals.advance(today)
            self._version += 1

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
                            totals = derive_totals(store, self._today)
                        else:
                            totals.advance(self._today)
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
        self._turn_of_day()
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
            chunks: dict[TopicPartition, dict[bytes, bytes | None]] = {tp: {} for tp in pending}
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
                        chunk[rec.key] = rec.value  # None: a tombstone deletes the key
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
        self._turn_of_day()
        changelog = self._config.changelog_topic
        saved: list[tuple[OwnedPartition, AppliedBatch]] = []
        commit: dict[TopicPartition, int] = {}
        total = 0
        last_ts = self._stats.last_event_ts_ns
        for tp, recs in batch.items():
            owned = self.owned.get(tp.partition)
            if owned is None:
                continue  # revoked while fetched
            owned.settled = False
            self._version += 1  # the totals change now
            applied = apply_batch(owned.store, owned.totals, [(rec.key, rec.value) for rec in recs])
            ts = applied.max_ts_ns
            if ts is not None and (last_ts is None or ts > last_ts):
                last_ts = ts
            self._sender.extend(changelog, tp.partition, applied.keys, applied.values)
            saved.append((owned, applied))
            commit[tp] = recs[-1].offset + 1
            total += applied.entries
        sent = await self._sender.flush()
        last_offsets: dict[int, int] = {}
        for b in sent:
            last_offsets[b.partition] = max(last_offsets.get(b.partition, -1), b.last_offset)
        for owned, applied in saved:
            if applied.keys:
                owned.store.save(applied.keys, applied.values, last_offsets[owned.partition])
            owned.settled = True
            owned.store.maybe_flush(owned.snapshot())
        stats = self._stats
        stats.last_event_ts_ns = last_ts
        stats.last_processed_s = time.time()
        stats.processed.labels("state").inc(total)
        stats.batch_duration.labels("state").observe(time.perf_counter() - started)
        return commit

    def partition_totals(self) -> list[AdoptionTotals]:
        """The totals of every owned partition (what `merged_totals` adds up); read only."""
        return [owned.totals for owned in list(self.owned.values())]

    def merged_totals(self) -> AdoptionTotals:
        """The section 2 totals of every owned partition, added up (what this worker exports); read only.

        Section 3 is left out: its collector sums each partition's own live answers, where a merge
        would have to compute them again from every date-keyed count. Cached until the next batch,
        day turn or assignment change: the scrapes between two batches share one merge, which with a
        month of hourly active-user buckets is most of a scrape's cost.
        """
        cached = self._merged
        if cached is not None and cached[0] == self._version:
            return cached[1]
        merged = AdoptionTotals()
        for owned in list(self.owned.values()):
            merged.merge(owned.totals, section_3=False)
        self._merged = (self._version, merged)
        return merged


@dataclass(slots=True)
class AppliedBatch:
    """What applying by-user records produced: the changelog records to write, in order."""

    keys: list[bytes]
    values: list[bytes | None]  # None: a deletion (a tombstone in the changelog)
    entries: int  # entries applied or recognised as replays
    max_ts_ns: int | None  # latest event time among the accepted events


def apply_batch(
    store: PartitionStore, totals: AdoptionTotals, values: Iterable[tuple[bytes | None, bytes]]
) -> AppliedBatch:
    """Apply by-user records (key, value) of one partition: the state stage without its I/O.

    Reads states from `store` (not written: the caller saves the returned records once the changelog
    has them) and keeps `totals` exact. One pass in record order: a user's state is loaded, and its
    old contribution taken out of the totals, at its first entry; its new contribution is put back
    once, after the batch, so every touched state is loaded, updated and written exactly once.
    (Grouping the entries by user first measured no faster: more instructions and more cache
    misses.) Outcomes are counted as they are given; a replay gets none.

    A hot user's dedup memory lives in shard records (core.dedup): they come first in the returned
    records, the deletions of shards it no longer uses last, so that a crash anywhere in the
    changelog write leaves every user state with the shards it names.
    """
    load, add_adoption = store.load, totals.add_adoption
    users: dict[str, UserState] = {}
    dates_before: dict[str, DatesOfUse] = {}  # of the users that had a state
    hot: dict[str, SeenShards] = {}
    keys: list[bytes] = []
    invalid: list[InvalidEntry] = []
    max_ts = None
    count = n_accepted = n_duplicate = n_future = 0
    for key, value in values:
        entries = records.unpack(key, value)
        count += len(entries)
        for entry in entries:
            if type(entry) is InvalidEntry:
                invalid.append(entry)
                continue
            user_id = entry.user_id
            user = users.get(user_id)
            if user is None:  # first touch in this batch: its old contribution leaves the totals
                skey = USER_PREFIX + user_id.encode()  # user_key(), written out: once per user
                user = load(skey)
                if user is None:
                    user = UserState()
                else:
                    # its dates of use leave the totals at the end, if they changed
                    dates_before[user_id] = add_adoption(user, -1, False)  # type: ignore
                    if user.dedup_depth:  # type: ignore[union-attr]
                        hot[user_id] = SeenShards(user_id, user.dedup_depth, load)  # type: ignore
                users[user_id] = user  # type: ignore[assignment]
                keys.append(skey)
            outcome = user.apply(entry, hot.get(user_id) if hot else None)
            if outcome is _ACCEPTED:
                n_accepted += 1
                ts = entry.ts_ns
                if max_ts is None or ts > max_ts:
                    max_ts = ts
            elif outcome is _DUPLICATE:
                n_duplicate += 1
            elif outcome is _FUTURE:
                n_future += 1
    out: list[bytes | None] = []
    first: list[tuple[bytes, bytes | None]] = []  # shard records, before every user state
    last: list[tuple[bytes, bytes | None]] = []  # deletions of shards, after them
    for user_id, user in users.items():
        seen = user.seen
        if len(seen) > 1:  # prune_seen() has nothing to do otherwise
            user.prune_seen()
            if len(user.seen) > INLINE_SEEN_MAX:  # the memory moves to shard records
                hot[user_id] = SeenShards.spill(user_id, user.seen, load)  # type: ignore[arg-type]
                user.seen = {}
        if hot and user_id in hot:
            memory = hot[user_id]
            before, after = memory.records(DEDUP_WINDOW_MS)
            user.dedup_depth = memory.depth
            first += before
            last += after
        before = dates_before.get(user_id) if dates_before else None
        if before is None:
            add_adoption(user)
        else:
            totals.replace_use_dates(before, add_adoption(user, 1, False))
        out.append(user.encode())
    if first or last:
        keys = [key for key, _ in first] + keys + [key for key, _ in last]
        out = [value for _, value in first] + out + [value for _, value in last]
    outcomes = totals.outcomes
    outcomes["accepted"] += n_accepted
    outcomes["duplicate"] += n_duplicate
    if n_future:
        outcomes["future"] += n_future
    if invalid:
        _apply_invalid(store, totals, invalid, keys, out)
    return AppliedBatch(keys, out, count, max_ts)


def _apply_invalid(
    store: PartitionStore,
    totals: AdoptionTotals,
    entries: list[InvalidEntry],
    keys: list[bytes],
    values: list[bytes | None],
) -> None:
    sources: dict[bytes, SourceOutcomes] = {}
    for entry in entries:
        key = source_key(entry.src_partition)
        source = sources.get(key)
        if source is None:  # its old contribution leaves the totals
            source = store.load(key)  # type: ignore[assignment]
            if source is None:
                source = SourceOutcomes()
            else:
                totals.add_source(source, -1)
            sources[key] = source
        source.apply(entry)
    for key, source in sources.items():
        totals.add_source(source)
        keys.append(key)
        values.append(source.encode())


def derive_totals(store: PartitionStore, today: int | None = None) -> AdoptionTotals:
    """The totals of every state in `store`, from scratch (an assignment without a usable snapshot),
    as of date `today` (None: keeping every date)."""
    totals = AdoptionTotals()
    if today is not None:
        totals.advance(today)
    for key, state in store.summaries():
        _add_stored(totals, key, state)
    return totals


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


def replace_in_totals(
    totals: AdoptionTotals, store: PartitionStore, values: dict[bytes, bytes | None]
) -> None:
    """Update the totals of `store`'s states for `values` about to overwrite them (a changelog tail)."""
    for key, value in values.items():
        if key[:1] == DEDUP_PREFIX:
            continue  # no contribution to the totals
        old = store.load(key)
        if old is not None:
            _add_stored(totals, key, old, -1)
        if value is not None:
            _add_stored(totals, key, decode_for_totals(key, value))


def _add_stored(totals: AdoptionTotals, key: bytes, state: State | UserSummary, sign: int = 1) -> None:
    kind = key[:1]
    if kind == USER_PREFIX:
        totals.add_user(state, sign)  # type: ignore[arg-type]
    elif kind == SOURCE_PREFIX:
        totals.add_source(state, sign)  # type: ignore[arg-type]
    # dedup shards contribute nothing


def _close_quietly(
    partition: int, store: PartitionStore, totals: Snapshot | None = None, flush: bool = True
) -> None:
    """Close a store whatever happens (a full disk fails its last flush): the changelog has it all."""
    try:
        store.close(totals, flush)
    except Exception as exc:
        log.warning("state partition %d: store closed without its last flush (%s)", partition, exc)
