"""Operational metrics of one worker (throughput, rebalances, dead letters), in the registry given."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class WorkerStats:
    """Counters updated once per batch, plus plain values read at scrape time."""

    registry: CollectorRegistry
    processed: Counter = field(init=False)
    dead_letters: Counter = field(init=False)
    rebalances: Counter = field(init=False)
    batch_duration: Histogram = field(init=False)
    restored_records: Counter = field(init=False)
    last_event_ts_ns: int | None = None
    last_processed_s: float | None = None
    restore_duration_s: float = 0.0
    # (topic, partition) -> (next offset to process, high watermark)
    positions: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

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
        for stage in ("ingest", "state"):
            self.processed.labels(stage)
            self.batch_duration.labels(stage)
        for reason in ("invalid", "future"):
            self.dead_letters.labels(reason)
