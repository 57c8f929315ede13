"""One stage's consumer loop: read a batch, apply it, commit. No batch, record or partition stops it.

Every partition a stage is assigned starts paused and is *admitted* by the loop before it is read
(the state stage restores its state and checks it was built from these topics; the ingest stage checks
the input topic): `admit`. What goes wrong is dealt with where it happened, and never skipped:

- a batch the consumer cannot read (corrupt, compressed with a codec this process lacks, too large)
  raises inside `getmany`, where aiokafka has already moved the positions past records it decoded:
  every position is put back, each partition with records is read alone to find the one(s) at fault,
  and those are paused where they stand;
- a batch whose processing hits a Kafka error (the broker down, a produce timing out) is read again
  after a backoff, the whole stage failing meanwhile;
- any other error is narrowed down to its partition by applying the partitions of the batch one at a
  time, and that partition is paused at the batch's first offset;
- an admission that fails (a restore error, a topic that changed) leaves its partition paused.

A paused partition is *held*: logged with its offset and the error, counted, shown in
`adoptstream_stuck_partitions`, and tried again with backoff (the state stage restores it again first:
its state in memory may be ahead of the changelog), until a batch of it goes through. Nothing of it is
committed meanwhile, so nothing is lost when the cause goes away. The other partitions go on, the web
endpoints keep answering, and the worker is not ready while any partition is held or the stage fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from adoptstream.runtime.connection import REFUSED
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stats import Stuck, WorkerStats
from adoptstream.runtime.store import is_store_error
from adoptstream.runtime.topics import RESET_HINT, TopicMismatch

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord]]
Handler = Callable[[Batch], Awaitable[dict[TopicPartition, int]]]
Admit = Callable[[list[int]], Awaitable[dict[int, Exception]]]  # partition -> why it cannot be read yet
Release = Callable[[list[int], bool], None]  # partitions, flush their stores (false: the disk failed)

POLL_TIMEOUT_MS = 200
PROBE_TIMEOUT_MS = 2_000  # a partition read alone to find a batch the consumer cannot decode
POSITION_TIMEOUT_S = 30.0
STAGE_BACKOFF_S = (0.1, 5.0)  # a failing stage waits 0.1 s, doubling up to 5 s, between attempts
HOLD_BACKOFF_S = (1.0, 30.0)  # a held partition: 1 s, doubling up to 30 s (5 s after a Kafka error)


def error_kind(exc: BaseException) -> str:
    """The `kind` label of an error raised while applying a batch."""
    if isinstance(exc, TopicMismatch):
        return "topic"
    if isinstance(exc, (KafkaError, asyncio.TimeoutError)):
        return "kafka"
    if is_store_error(exc):
        return "storage"
    return "other"


def describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


@dataclass(slots=True)
class _Hold:
    kind: str
    reason: str
    offset: int | None
    failures: int
    since_s: float  # wall clock of the first failure
    retry_at: float  # monotonic; inf once resumed, until a batch of it goes through


class Stage:
    """The loop of one consumer group (ingest or state) and the partitions it holds back."""

    def __init__(
        self,
        name: str,
        group: str,
        consumer: AIOKafkaConsumer,
        handler: Handler,
        sender: BatchSender,
        stats: WorkerStats,
        stopping: asyncio.Event,
        *,
        max_records: int,
        admit: Admit | None = None,
        admit_error_kind: str = "kafka",
        release: Release | None = None,
        reload_after_failure: bool = False,
        on_idle: Callable[[], None] | None = None,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        """`reload_after_failure`: a failed batch may have left the partitions' state in memory ahead of
        what is stored (the state stage): release them and admit them again (a restore) before reading."""
        self.name, self._group = name, group
        self._consumer, self._handler, self._sender, self._stats = consumer, handler, sender, stats
        # the series exists at 0 before the first assignment, so increase() and changes() count that one
        stats.rebalances.labels(group)
        self._stopping = stopping
        self._max_records = max_records
        self._admit, self._admit_error_kind, self._release = admit, admit_error_kind, release
        self._reload = reload_after_failure
        self._on_idle, self._after_batch = on_idle, after_batch
        self.lock = asyncio.Lock()  # one batch, admission or hand-over at a time
        self._pending: set[TopicPartition] = set()  # assigned, paused until admitted
        self._next: dict[TopicPartition, int] = {}  # admitted: the next offset to read
        self._holds: dict[TopicPartition, _Hold] = {}
        self._suspects: set[TopicPartition] = set()  # applied one partition per batch until one goes through
        self._failing_since: float | None = None
        self._backoff = STAGE_BACKOFF_S[0]

    @property
    def ready(self) -> bool:
        """Every assigned partition admitted and readable, and the last batch went through."""
        return not self._pending and not self._holds and self._failing_since is None

    def listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    # -- hand-over (under the lock, from the rebalance listener) -------------------------------------

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        tps = list(tps)
        self._release_partitions(tps)
        for tp in tps:
            self._pending.discard(tp)
            self._next.pop(tp, None)
            self._holds.pop(tp, None)
            self._suspects.discard(tp)
        self._failing_since = None  # a failed batch is read again by whoever owns its partitions now
        self._publish()

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        new = [tp for tp in tps if tp not in self._next]
        self._consumer.pause(*new)
        self._pending.update(new)
        self._stats.rebalances.labels(self._group).inc()

    # -- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read, apply and commit until the worker stops."""
        consumer = self._consumer
        while not self._stopping.is_set():
            await self._admit_due()
            try:
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self._max_records)
            except REFUSED:
                raise
            except Exception as exc:  # a batch the consumer cannot read
                await self._wait(await self._on_read_error(exc))
                continue
            if not batch:
                if self._on_idle is not None or self._holds:
                    async with self.lock:
                        self._idle()
                continue
            async with self.lock:
                delay = await self._process(batch)
            del batch  # freed before the collection walks the young objects
            if delay:
                await self._wait(delay)
            if self._after_batch is not None:
                self._after_batch()

    async def _process(self, batch: Batch) -> float:
        """Apply a batch, suspects one partition at a time; return how long to wait before the next."""
        batch = {tp: recs for tp, recs in batch.items() if tp in self._next}  # not revoked meanwhile
        for tp, recs in list(batch.items()):
            if recs[0].offset < self._next[tp]:  # not our seek: the consumer reset to a recreated start
                del batch[tp]
                self._went_back(tp, recs[0].offset)
        if not batch:
            return 0.0
        if self._suspects.isdisjoint(batch):
            parts = [batch]
        else:
            rest = {tp: recs for tp, recs in batch.items() if tp not in self._suspects}
            parts = [{tp: recs} for tp, recs in batch.items() if tp in self._suspects]
            parts += [rest] if rest else []
        for i, part in enumerate(parts):
            try:
                commit = await self._handler(part)
            except REFUSED:
                raise
            except Exception as exc:
                if self._failed(part, exc):  # the whole stage waits: read the rest again after it
                    for later in parts[i + 1 :]:
                        self._rewind(later)
                    return self._stage_failed(exc)
                continue
            self._succeeded(part)
            await self._commit(commit)
        return 0.0

    def _failed(self, part: Batch, exc: Exception) -> bool:
        """Put a failed part back; True when the error is the stage's (Kafka), not its partitions'."""
        self._sender.discard()
        kind = error_kind(exc)
        self._stats.batch_errors.labels(self.name, kind).inc()
        first = {tp: recs[0].offset for tp, recs in part.items()}
        self._rewind(part)
        if self._reload:
            self._readmit(list(part), flush=kind != "storage")
        if kind == "kafka":
            return True
        if len(part) > 1:  # narrow it down: each of them alone from now on
            self._suspects.update(part)
            log.warning(
                "%s stage: a batch of partitions %s failed (%s); applying them one at a time",
                self.name,
                sorted(tp.partition for tp in part),
                describe(exc),
            )
            return False
        (tp,) = part
        self._suspects.discard(tp)
        self._hold(tp, kind, exc, first[tp])
        return False

    def _went_back(self, tp: TopicPartition, offset: int) -> None:
        """A partition's offsets went back: it was deleted and created again (or truncated) under us."""
        expected = self._next[tp]
        exc = TopicMismatch(
            f"{tp.topic}/{tp.partition} was read up to offset {expected}, and now starts again at {offset}: "
            f"the topic was recreated or truncated, and its new records would be taken for replays; "
            + RESET_HINT
        )
        self._stats.batch_errors.labels(self.name, "topic").inc()
        self._consumer.seek(tp, expected)
        self._hold(tp, "topic", exc, expected)

    def _succeeded(self, part: Batch) -> None:
        for tp, recs in part.items():
            self._next[tp] = recs[-1].offset + 1
            self._suspects.discard(tp)
            held = self._holds.pop(tp, None)
            if held is not None:
                log.warning(
                    "%s stage: %s/%d goes on from offset %d after %d failed attempts (%s)",
                    self.name,
                    tp.topic,
                    tp.partition,
                    recs[0].offset,
                    held.failures,
                    held.reason,
                )
                self._publish()
        if self._failing_since is not None:
            log.warning("%s stage: batches go through again after %.0f s", self.name, self._failing_time())
            self._failing_since = None
            self._publish()
        self._backoff = STAGE_BACKOFF_S[0]

    def _stage_failed(self, exc: Exception) -> float:
        if self._failing_since is None:
            self._failing_since = time.time()
            self._publish()
        delay, self._backoff = self._backoff, min(self._backoff * 2, STAGE_BACKOFF_S[1])
        log.warning(
            "%s stage: batch failed (%s), failing for %.0f s; read again in %.1f s",
            self.name,
            describe(exc),
            self._failing_time(),
            delay,
        )
        return delay

    def _failing_time(self) -> float:
        return 0.0 if self._failing_since is None else time.time() - self._failing_since

    async def _on_read_error(self, exc: Exception) -> float:
        """`getmany` raised: put every position back and read each partition alone to find the culprit.

        A culprit is read one record at a time up to the batch that fails: the records before it are
        applied, and the partition is held at the first offset it cannot read.
        """
        async with self.lock:
            consumer = self._consumer
            paused = consumer.paused()
            active = sorted(tp for tp in consumer.assignment() if tp in self._next and tp not in paused)
            for tp in active:
                consumer.seek(tp, self._next[tp])
            culprits: dict[TopicPartition, tuple[Exception, list[ConsumerRecord]]] = {}
            for tp in active:
                high = consumer.highwater(tp)
                if high is not None and self._next[tp] >= high:
                    continue  # nothing to read there
                readable: list[ConsumerRecord] = []
                try:
                    while len(readable) < self._max_records:
                        timeout_ms = 0 if readable else PROBE_TIMEOUT_MS
                        got = await consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
                        if not got:
                            break
                        readable += got[tp]
                except Exception as probe:
                    culprits[tp] = (probe, readable)
                consumer.seek(tp, self._next[tp])  # read again, in order, by the loop or just below
            for tp, (probe, readable) in culprits.items():
                if readable:  # what the consumer can read before the batch it cannot
                    consumer.seek(tp, readable[-1].offset + 1)
                    await self._process({tp: readable})
                    if self._next.get(tp) != readable[-1].offset + 1:
                        continue  # applying them failed: dealt with there
                self._stats.batch_errors.labels(self.name, "read").inc()
                self._hold(tp, "read", probe, self._next[tp])
                consumer.seek(tp, self._next[tp])
            if culprits:
                return 0.0
            self._stats.batch_errors.labels(self.name, "read").inc()
            return self._stage_failed(exc)

    # -- admission and holds -------------------------------------------------------------------------

    async def _admit_due(self) -> None:
        """Admit the assigned partitions waiting for it, and resume the held ones whose time has come."""
        if not self._pending and not self._holds:
            return
        now = time.monotonic()
        holds = self._holds
        resume = [tp for tp, h in holds.items() if h.retry_at <= now and tp not in self._pending]
        admit = [tp for tp in self._pending if tp not in holds or holds[tp].retry_at <= now]
        if not resume and not admit:
            return
        async with self.lock:  # a rebalance may have changed everything while we waited for it
            assigned = self._consumer.assignment()
            for tp in resume:
                held = holds.get(tp)
                if held is not None and tp in assigned and tp not in self._pending:
                    held.retry_at = math.inf  # on probation: alone in its batches until one goes through
                    self._suspects.add(tp)
                    self._consumer.resume(tp)
            due = sorted(tp for tp in admit if tp in self._pending and tp in assigned)
            # together the first time (one restore reads all their changelogs), one by one once failed
            fresh = [tp for tp in due if tp not in holds]
            for group in ([fresh] if fresh else []) + [[tp] for tp in due if tp in holds]:
                await self._admit_now(group)

    async def _admit_now(self, due: list[TopicPartition]) -> None:
        try:
            failures = await self._admit([tp.partition for tp in due]) if self._admit else {}
        except REFUSED:
            raise
        except Exception as exc:
            failures = {tp.partition: exc for tp in due}
        for tp in due:
            exc = failures.get(tp.partition)
            if exc is None:
                try:
                    position = await asyncio.wait_for(self._consumer.position(tp), POSITION_TIMEOUT_S)
                except Exception as err:
                    self._release_partitions([tp])
                    exc = err
            if exc is not None:
                kind = "topic" if isinstance(exc, TopicMismatch) else self._admit_error_kind
                kind = "storage" if is_store_error(exc) else kind
                self._stats.batch_errors.labels(self.name, kind).inc()
                self._hold(tp, kind, exc, None)
                continue
            self._pending.discard(tp)
            self._next[tp] = position
            held = self._holds.get(tp)
            if held is not None:
                held.retry_at = math.inf
                self._suspects.add(tp)
            self._consumer.resume(tp)

    def _hold(self, tp: TopicPartition, kind: str, exc: BaseException, offset: int | None) -> None:
        """Pause a partition that failed; it is tried again after a backoff."""
        held = self._holds.get(tp)
        failures = held.failures + 1 if held is not None else 1
        first, most = HOLD_BACKOFF_S
        if isinstance(exc, (KafkaError, asyncio.TimeoutError)):
            most = STAGE_BACKOFF_S[1]
        delay = min(most, first * 2 ** min(failures - 1, 10))
        since = held.since_s if held is not None else time.time()
        self._holds[tp] = _Hold(kind, describe(exc), offset, failures, since, time.monotonic() + delay)
        self._consumer.pause(tp)
        where = "before reading" if offset is None else f"at offset {offset}"
        log.error(
            "%s stage: %s/%d held %s: %s; tried again in %.0f s (failure %d; nothing of it is skipped)",
            self.name,
            tp.topic,
            tp.partition,
            where,
            describe(exc),
            delay,
            failures,
        )
        self._publish()

    def _readmit(self, tps: list[TopicPartition], flush: bool = True) -> None:
        """Release partitions and have them admitted again (restored) before they are read."""
        tps = [tp for tp in tps if tp in self._next]
        self._release_partitions(tps, flush)
        for tp in tps:
            self._next.pop(tp)
            self._pending.add(tp)
        self._consumer.pause(*tps)

    def _release_partitions(self, tps: list[TopicPartition], flush: bool = True) -> None:
        if self._release is not None and tps:
            self._release([tp.partition for tp in tps], flush)

    def _rewind(self, part: Batch) -> None:
        """Read a part's records again: seek each partition back to its first record."""
        assigned = self._consumer.assignment()
        for tp, recs in part.items():
            if tp in assigned:
                self._consumer.seek(tp, recs[0].offset)
                if tp in self._next:
                    self._next[tp] = recs[0].offset

    def _publish(self) -> None:
        """What the operations metrics and /ready show: this stage's held partitions and failing time."""
        stuck = self._stats.stuck
        for key in [k for k, s in stuck.items() if s.stage == self.name]:
            del stuck[key]
        for tp, h in self._holds.items():
            stuck[(tp.topic, tp.partition)] = Stuck(self.name, h.kind, h.reason, h.offset, h.since_s)
        if self._failing_since is None:
            self._stats.failing_since_s.pop(self.name, None)
        else:
            self._stats.failing_since_s[self.name] = self._failing_since

    # -- small things --------------------------------------------------------------------------------

    def _idle(self) -> None:
        """Nothing to read: the stage's periodic work (the state stores' flushes), and partitions that
        went on after a hold and have nothing left to read are no longer held."""
        for tp, held in list(self._holds.items()):
            high = self._consumer.highwater(tp)
            if held.retry_at == math.inf and high is not None and tp in self._next and self._next[tp] >= high:
                del self._holds[tp]
                self._suspects.discard(tp)
                log.warning(
                    "%s stage: %s/%d goes on, nothing left to read", self.name, tp.topic, tp.partition
                )
                self._publish()
        if self._on_idle is None:
            return
        try:
            self._on_idle()
        except Exception as exc:  # a store's periodic flush on a full disk: its writes are gone
            kind = error_kind(exc)
            self._stats.batch_errors.labels(self.name, kind).inc()
            log.error("%s stage: periodic store work failed: %s", self.name, describe(exc))
            admitted = list(self._next)
            if self._reload:  # what only the stores' memory held comes back from the changelog
                self._readmit(admitted, flush=kind != "storage")
            for tp in admitted:
                self._hold(tp, kind, exc, None)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except REFUSED:
            raise
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # Safe: the next owner re-reads these records and recognises them as replays.
            log.info("commit skipped during rebalance: %s", exc)

    async def _wait(self, delay: float) -> None:
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)


class _Listener(ConsumerRebalanceListener):
    """Runs partition hand-over under the stage lock, so it never interleaves with a batch."""

    def __init__(self, stage: Stage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._stage.lock:
            self._stage.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._stage.lock:
            self._stage.assigned(assigned)
