"""One adoptstream worker: two consumer groups (ingest, state), one producer, one web endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry

from adoptstream import __version__
from adoptstream.exposition.collector import AdoptionCollector, OperationsCollector
from adoptstream.exposition.engagement import EngagementCollector
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.ingest import Ingest
from adoptstream.runtime.processor import StateProcessor
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stats import WorkerStats
from adoptstream.runtime.topics import ensure_topics

log = logging.getLogger(__name__)
Handler = Callable[[dict[TopicPartition, list]], Awaitable[dict[TopicPartition, int]]]


class _Listener(ConsumerRebalanceListener):
    """Runs partition hand-over under the stage lock, so it never interleaves with a batch."""

    def __init__(
        self,
        lock: asyncio.Lock,
        revoked: Callable[[list[int]], None],
        assigned: Callable[[list[int]], Awaitable[None]],
        on_rebalance: Callable[[], None],
    ) -> None:
        self._lock, self._revoked, self._assigned, self._on_rebalance = lock, revoked, assigned, on_rebalance

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            self._revoked([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            await self._assigned([tp.partition for tp in assigned])
        self._on_rebalance()


async def _nothing(_: list[int]) -> None:
    return None


class Worker:
    """Wires the stages together and runs them until `stop()`."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.stats = WorkerStats(CollectorRegistry())
        self.registry = CollectorRegistry()  # everything /metrics serves
        self.registry.register(self.stats.registry)
        self.collectors: list[AdoptionCollector | EngagementCollector | OperationsCollector] = []
        self.started_at = time.time()
        self._stopping = asyncio.Event()
        self._ingest_lock = asyncio.Lock()
        self._state_lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self.ingest_consumer: AIOKafkaConsumer | None = None
        self.state_consumer: AIOKafkaConsumer | None = None
        self.processor: StateProcessor | None = None
        self._web = None
        self.ready = False

    def _consumer(self, group: str) -> AIOKafkaConsumer:
        c = self.config
        return AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap_servers,
            group_id=group,
            # Static membership (KIP-345) when set: a replacement with the same id takes over the old
            # member's partitions without waiting for its session to expire; stop() sends no
            # LeaveGroup then. One id serves both groups: it is unique per group, and they differ.
            group_instance_id=c.instance_id,
            client_id=f"{c.app_id}-{c.worker_name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # a transactional producer's aborted messages are never counted, its committed ones once
            isolation_level="read_committed",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            rebalance_timeout_ms=max(60_000, c.session_timeout_ms),
            max_poll_interval_ms=300_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )

    async def start(self) -> None:
        """Create topics, start Kafka clients and the web endpoint."""
        from adoptstream.exposition.web import WebServer

        c = self.config
        by_user = await ensure_topics(c)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=c.bootstrap_servers,
            client_id=f"{c.app_id}-{c.worker_name}",
            acks="all",
            enable_idempotence=True,
            # BatchSender hands over whole batches, then waits for their acks: a linger would only
            # hold each flush back (aiokafka lingers on every batch it did not see fill up)
            linger_ms=0,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        await self._producer.start()
        dlq_partitions = len(await self._producer.partitions_for(c.dlq_topic))
        self._state_sender = BatchSender(self._producer)
        self._ingest_sender = BatchSender(self._producer)
        self.processor = StateProcessor(c, self._state_sender, self.stats)
        self._ingest = Ingest(c, self._ingest_sender, self.stats, by_user, dlq_partitions)
        adoption = AdoptionCollector(self.processor, c.max_features, c.max_cohorts)
        self.collectors = [
            adoption,
            EngagementCollector(self.processor, adoption.features),
            OperationsCollector(self),
        ]
        for collector in self.collectors:
            self.registry.register(collector)
        self._web = WebServer(self, c.web_host, c.web_port)
        await self._web.start()

        processor = self.processor
        self.ingest_consumer = self._consumer(c.ingest_group)
        self.ingest_consumer.subscribe(
            [c.topic],
            listener=_Listener(self._ingest_lock, lambda _: None, _nothing, self._counter(c.ingest_group)),
        )
        self.state_consumer = self._consumer(c.state_group)
        self.state_consumer.subscribe(
            [c.repartition_topic],
            listener=_Listener(
                self._state_lock, processor.revoke, processor.assign, self._counter(c.state_group)
            ),
        )
        await self.ingest_consumer.start()
        await self.state_consumer.start()
        self.ready = True
        log.info(
            "worker %s up: topic %s (%d by-user partitions), %s, metrics at http://%s:%d/metrics",
            c.worker_name,
            c.topic,
            by_user,
            f"static group member {c.instance_id!r}" if c.instance_id else "dynamic group membership",
            c.web_host,
            self._web.port,
        )

    def _counter(self, group: str) -> Callable[[], None]:
        return lambda: self.stats.rebalances.labels(group).inc()

    @property
    def web_port(self) -> int:
        return self._web.port if self._web else self.config.web_port

    async def run(self) -> None:
        """Process until `stop()` is called (or SIGINT/SIGTERM when installed).

        A stop lets each stage finish the batch in hand (its outputs acknowledged, its offsets
        committed, its state saved) for up to `STOP_GRACE_S`; a stage still busy then is cancelled,
        and its batch is read again by the next owner.
        """
        assert self.ingest_consumer and self.state_consumer and self.processor
        loops = [
            asyncio.create_task(
                self._loop(
                    self.ingest_consumer,
                    self._ingest_lock,
                    self._ingest.process,
                    self._ingest_sender,
                    None,
                    self.config.batch_max_records,
                    None,
                )
            ),
            asyncio.create_task(
                self._loop(
                    self.state_consumer,
                    self._state_lock,
                    self.processor.process,
                    self._state_sender,
                    self._reload_state,
                    # by-user records are packs of up to PACK_MAX_ENTRIES entries
                    max(1, self.config.batch_max_records // records.PACK_MAX_ENTRIES),
                    self.processor.idle,
                )
            ),
            asyncio.create_task(self._track_lag()),
        ]
        stop = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait([stop, *loops], return_when=asyncio.FIRST_COMPLETED)
        if stop in done:  # the loops end after the batch in hand (committed, its state saved)
            done, _ = await asyncio.wait(loops, timeout=STOP_GRACE_S)
            done.add(stop)
        for task in loops:
            task.cancel() if task not in done else None
        await asyncio.gather(*loops, return_exceptions=True)
        for task in done:
            if task is not stop and task.exception():
                raise task.exception()  # type: ignore[misc]

    async def _loop(
        self,
        consumer: AIOKafkaConsumer,
        lock: asyncio.Lock,
        handler: Handler,
        sender: BatchSender,
        on_failure: Callable[[list[int]], Awaitable[None]] | None,
        max_records: int,
        on_idle: Callable[[], None] | None,
    ) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=max_records)
            if not batch:
                if on_idle is not None:
                    async with lock:
                        on_idle()
                continue
            async with lock:
                try:
                    commit = await handler(batch)
                except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                    log.warning("batch failed (%s); it will be read again", exc)
                    await self._rewind(consumer, batch, sender, on_failure)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                await self._commit(consumer, commit)
            del batch, commit  # freed before the collection walks the young objects
            collect_between_batches()

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # Safe: the next owner re-reads these records and recognises them as replays.
            log.info("commit skipped during rebalance: %s", exc)

    async def _rewind(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list],
        sender: BatchSender,
        on_failure: Callable[[list[int]], Awaitable[None]] | None,
    ) -> None:
        sender.discard()
        assigned = consumer.assignment()
        for tp, recs in batch.items():
            if tp in assigned:
                consumer.seek(tp, recs[0].offset)
        if on_failure is not None:
            await on_failure([tp.partition for tp in batch if tp in assigned])

    async def _reload_state(self, partitions: list[int]) -> None:
        """After a failed state batch, in-memory state may be ahead of the changelog: rebuild it."""
        assert self.processor
        self.processor.revoke(partitions)
        await self.processor.assign(partitions)

    async def _track_lag(self) -> None:
        """Refresh (next offset, high watermark) of every assigned partition once a second."""
        while not self._stopping.is_set():
            positions: dict[tuple[str, int], tuple[int, int]] = {}
            for consumer in (self.ingest_consumer, self.state_consumer):
                for tp in consumer.assignment() if consumer else ():
                    high = consumer.highwater(tp)  # type: ignore[union-attr]
                    try:
                        pos = await consumer.position(tp)  # type: ignore[union-attr]
                    except (IllegalStateError, KafkaError, AssertionError):
                        continue
                    if high is not None:
                        positions[(tp.topic, tp.partition)] = (pos, high)
            self.stats.positions = positions
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=1.0)

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Stop the consumers and release everything.

        The consumers leave their groups (their partitions move at once), except as static members
        (`instance_id`): then the partitions wait up to the session timeout for the same id to return.
        """
        self.ready = False
        for consumer in (self.ingest_consumer, self.state_consumer):
            if consumer is not None:
                try:
                    await consumer.stop()
                except KafkaError as exc:
                    log.warning("consumer stop: %s", exc)
        if self._producer is not None:
            await self._producer.stop()
        if self.processor is not None:
            self.processor.close()
        if self._web is not None:
            await self._web.stop()

    def version(self) -> str:
        return __version__


STOP_GRACE_S = 10.0  # how long a stopping worker lets its stages finish their batches, then cancels
YOUNG_COLLECTION_OBJECTS = 100_000  # young collections between batches, about every this many allocations


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for an allocation-heavy batch loop.

    Batches allocate many short-lived objects; CPython's default gen-0 threshold (700) runs the
    collector thousands of times per second, each pass walking the batch's live states again. Young
    collections run between batches (`collect_between_batches`), when a batch's temporaries are
    already freed and only what outlives it is walked; the automatic threshold stays as a backstop.
    State objects hold no reference cycles, so rare collections lose nothing.
    """
    gc.collect()
    gc.freeze()  # what exists at start-up is never garbage
    gc.set_threshold(10 * YOUNG_COLLECTION_OBJECTS, 50, 100)


def collect_between_batches() -> None:
    """The young collection a batch's allocations are due, now that its temporaries are gone."""
    young, middle, _ = gc.get_count()
    if young >= YOUNG_COLLECTION_OBJECTS:
        gc.collect(1 if middle >= 50 else 0)


async def run_worker(config: WorkerConfig) -> None:
    """Run a worker until SIGINT/SIGTERM."""
    tune_gc()
    worker = Worker(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.start()
        await worker.run()
    finally:
        await worker.close()
