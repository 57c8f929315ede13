"""One adoptstream worker: two consumer groups (ingest, state), one producer, one web endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry

from adoptstream.core.totals import AdoptionTotals
from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream.runtime.connection import REFUSED, BrokerUnreachable, check_connection, client_options
from adoptstream.runtime.ingest import Ingest
from adoptstream.runtime.processor import StateProcessor
from adoptstream.runtime.sender import BatchSender
from adoptstream.runtime.stage import Stage
from adoptstream.runtime.stats import LOOP_LAG_TICK_S, WorkerStats
from adoptstream.runtime.topics import MAX_REQUEST_BYTES, TopicLayout, check_input, ensure_topics

log = logging.getLogger(__name__)

START_BACKOFF_S = (0.5, 10.0)  # waiting for the broker at start: 0.5 s, doubling up to 10 s


class Worker:
    """Runs the two stages (ingest, state) on Kafka until `stop()`.

    What it exposes is read through narrow views: the partitions' totals (`partition_totals`,
    `merged_totals`), its readiness and progress (`ready`, `progress`, ...). `adoptstream.app` wires
    it to the exposition.
    """

    def __init__(self, config: WorkerConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.stats = WorkerStats(CollectorRegistry() if registry is None else registry)
        self.started_at = time.time()
        self._stopping = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self.ingest_consumer: AIOKafkaConsumer | None = None
        self.state_consumer: AIOKafkaConsumer | None = None
        self.processor: StateProcessor | None = None
        self.layout: TopicLayout | None = None
        self._stages: list[Stage] = []
        self._started = False

    @property
    def ready(self) -> bool:
        """Serving exact numbers: started, every assigned partition restored and readable, and no stage
        failing (the one readiness rule: /ready and `adoptstream_ready` read it)."""
        return self._started and all(stage.ready for stage in self._stages)

    @property
    def progress(self) -> WorkerStats:
        return self.stats

    @property
    def consumed_topics(self) -> tuple[str, ...]:
        return (self.config.topic, self.config.repartition_topic)

    def partition_totals(self) -> list[AdoptionTotals]:
        return self.processor.partition_totals() if self.processor is not None else []

    def merged_totals(self) -> AdoptionTotals:
        return self.processor.merged_totals() if self.processor is not None else AdoptionTotals()

    def _consumer(self, group: str) -> AIOKafkaConsumer:
        c = self.config
        return AIOKafkaConsumer(
            **client_options(c),
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
            # a topic deleted and created again is assigned (and checked) within this, not 5 minutes
            metadata_max_age_ms=30_000,
        )

    async def start(self) -> None:
        """Create topics and start the Kafka clients, waiting (not ready) while the broker is away.

        Returns early when `stop()` is called meanwhile; a setting that cannot work (`ConfigError`)
        raises at once.
        """
        delay = START_BACKOFF_S[0]
        while not self._stopping.is_set():
            try:
                await self._connect()
                return
            except REFUSED:
                await self._disconnect()
                raise
            except (TimeoutError, BrokerUnreachable, KafkaError, OSError) as exc:
                await self._disconnect()
                log.warning(
                    "broker %s not reachable (%s); trying again in %.1f s", self.config.broker, exc, delay
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, START_BACKOFF_S[1])

    async def _connect(self) -> None:
        c = self.config
        await check_connection(c)  # a refused login or certificate ends start-up here, not in a retry loop
        self.layout = layout = await ensure_topics(c)
        self._producer = AIOKafkaProducer(
            **client_options(c),
            client_id=f"{c.app_id}-{c.worker_name}",
            acks="all",
            enable_idempotence=True,
            # BatchSender hands over whole batches, then waits for their acks: a linger would only
            # hold each flush back (aiokafka lingers on every batch it did not see fill up)
            linger_ms=0,
            max_batch_size=512 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
        )
        await self._producer.start()
        dlq_partitions = len(await self._producer.partitions_for(c.dlq_topic))
        state_sender = BatchSender(self._producer)
        ingest_sender = BatchSender(self._producer)
        self.processor = processor = StateProcessor(c, state_sender, self.stats, layout)
        ingest = Ingest(c, ingest_sender, self.stats, layout.by_user_partitions, dlq_partitions)
        self.ingest_consumer = self._consumer(c.ingest_group)
        self.state_consumer = self._consumer(c.state_group)
        stages = [
            Stage(
                "ingest",
                c.ingest_group,
                self.ingest_consumer,
                ingest.process,
                ingest_sender,
                self.stats,
                self._stopping,
                max_records=c.batch_max_records,
                admit=self._check_input,
                admit_error_kind="kafka",
                after_batch=collect_between_batches,
            ),
            Stage(
                "state",
                c.state_group,
                self.state_consumer,
                processor.process,
                state_sender,
                self.stats,
                self._stopping,
                # by-user records are packs of up to PACK_MAX_ENTRIES entries
                max_records=max(1, c.batch_max_records // records.PACK_MAX_ENTRIES),
                admit=self._restore_state,
                admit_error_kind="restore",
                release=processor.revoke,
                reload_after_failure=True,
                on_idle=processor.idle,
                after_batch=collect_between_batches,
            ),
        ]
        for stage, consumer, topic in zip(
            stages, (self.ingest_consumer, self.state_consumer), self.consumed_topics, strict=True
        ):
            consumer.subscribe([topic], listener=stage.listener())
        await self.ingest_consumer.start()
        await self.state_consumer.start()
        self._stages = stages
        self._started = True
        log.info(
            "worker %s up: topic %s (%d by-user partitions), %s",
            c.worker_name,
            c.topic,
            layout.by_user_partitions,
            f"static group member {c.instance_id!r}" if c.instance_id else "dynamic group membership",
        )

    async def _check_input(self, partitions: list[int]) -> dict[int, Exception]:
        """The ingest stage's admission: the input topic is the one the worker started with."""
        assert self.ingest_consumer is not None and self.layout is not None
        started_id = self.layout.ids.get(self.config.topic)
        failures, lost = await check_input(self.ingest_consumer, self.config, started_id, partitions)
        for partition, count in lost.items():
            self.stats.records_lost.labels(self.config.topic).inc(count)
            log.error(
                "input partition %s/%d: %d records were deleted by the broker (retention, delete-records) "
                "before this app read them; reading on from the partition's start",
                self.config.topic,
                partition,
                count,
            )
        return failures

    async def _restore_state(self, partitions: list[int]) -> dict[int, Exception]:
        """The state stage's admission: restore; the group's committed offsets tell a reset app."""
        assert self.state_consumer is not None and self.processor is not None
        topic = self.config.repartition_topic
        reset = [
            p for p in partitions if await self.state_consumer.committed(TopicPartition(topic, p)) is None
        ]
        return await self.processor.assign(partitions, reset)

    async def run(self) -> None:
        """Process until `stop()` is called (or SIGINT/SIGTERM when installed).

        A stop lets each stage finish the batch in hand (its outputs acknowledged, its offsets
        committed, its state saved) for up to `STOP_GRACE_S`; a stage still busy then is cancelled,
        and its batch is read again by the next owner.
        """
        if not self._started:  # stopped before the broker was reached
            return
        loops = [asyncio.create_task(stage.run()) for stage in self._stages]
        loops += [asyncio.create_task(self._track_lag()), asyncio.create_task(self._probe_loop_lag())]
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

    async def _probe_loop_lag(self) -> None:
        """How late the event loop runs a timer: what a long scrape or batch costs the heartbeats."""
        loop = asyncio.get_running_loop()
        lags = self.stats.recent_loop_lags_s
        while not self._stopping.is_set():
            planned = loop.time() + LOOP_LAG_TICK_S
            await asyncio.sleep(LOOP_LAG_TICK_S)
            lag = max(0.0, loop.time() - planned)
            self.stats.loop_lag.observe(lag)
            lags.append(lag)

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Stop the consumers and release everything.

        The consumers leave their groups (their partitions move at once), except as static members
        (`instance_id`): then the partitions wait up to the session timeout for the same id to return.
        """
        self._started = False
        await self._disconnect()

    async def _disconnect(self) -> None:
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
        self.ingest_consumer = self.state_consumer = self._producer = self.processor = None


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
