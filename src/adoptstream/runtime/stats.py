"""Operational metrics of one worker (throughput, rebalances, dead letters), in the registry given."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_TICK_S = 0.05  # the timer whose lateness is the loop lag
LOOP_LAG_WINDOW = 1200  # lags kept for the worst one of the last minute (of 50 ms ticks)
STAGES = ("ingest", "state")
# what went wrong, in `adoptstream_batch_errors_total{kind}`
ERROR_KINDS = ("read", "kafka", "storage", "restore", "topic", "other")


@dataclass(frozen=True)
class Stuck:
    """A partition held back: what went wrong, where, since when (wall clock); retried with backoff."""

    stage: str
    kind: str
    reason: str
    offset: int | None
    since_s: float


@dataclass
class WorkerStats:
    """Counters updated once per batch, plus plain values read at scrape time."""

    registry: CollectorRegistry
    processed: Counter = field(init=False)
    dead_letters: Counter = field(init=False)
    rebalances: Counter = field(init=False)
    batch_duration: Histogram = field(init=False)
    restored_records: Counter = field(init=False)
    batch_errors: Counter = field(init=False)
    records_lost: Counter = field(init=False)
    loop_lag: Histogram = field(init=False)
    last_event_ts_ns: int | None = None
    last_processed_s: float | None = None
    restore_duration_s: float = 0.0
    # (topic, partition) -> (next offset to process, high watermark)
    positions: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    # (topic, partition) -> why it is held back; stage -> wall clock its batches started failing
    stuck: dict[tuple[str, int], Stuck] = field(default_factory=dict)
    failing_since_s: dict[str, float] = field(default_factory=dict)
    recent_loop_lags_s: deque[float] = field(default_factory=lambda: deque(maxlen=LOOP_LAG_WINDOW))

    def __post_init__(self) -> None:
        r = self.registry
        self.processed = Counter(
            "adoptstream_processed_records",
            "Input messages processed, by stage (ingest: read and routed; state: applied to user state).",
            ["stage"],
            registry=r,
        )
        self.dead_letters = Counter(
            "adoptstream_dead_letters",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.rebalances = Counter(
            "adoptstream_rebalances",
            "Partition assignments received, by consumer group.",
            ["group"],
            registry=r,
        )
        self.batch_duration = Histogram(
            "adoptstream_batch_duration_seconds",
            "Wall time to process one batch end to end, by stage.",
            ["stage"],
            buckets=BATCH_BUCKETS_S,
            registry=r,
        )
        self.restored_records = Counter(
            "adoptstream_state_restored_records", "Changelog records read to restore state.", registry=r
        )
        self.batch_errors = Counter(
            "adoptstream_batch_errors",
            "Failures while reading, applying or restoring, by stage and kind (read: a batch the consumer "
            "cannot decode; kafka: a broker request; storage: the local state store; restore: a partition's "
            "restore; topic: a topic that is not the one the state was built from; other).",
            ["stage", "kind"],
            registry=r,
        )
        self.records_lost = Counter(
            "adoptstream_input_records_lost",
            "Input records the broker deleted (retention, delete-records) before this app read them.",
            ["topic"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "adoptstream_event_loop_lag_seconds",
            "How late the worker's event loop (consumers, heartbeats, scrapes) ran a 50 ms timer.",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=r,
        )
        for stage in STAGES:
            self.processed.labels(stage)
            self.batch_duration.labels(stage)
            for kind in ERROR_KINDS:
                self.batch_errors.labels(stage, kind)
        for reason in ("invalid", "future"):
            self.dead_letters.labels(reason)
