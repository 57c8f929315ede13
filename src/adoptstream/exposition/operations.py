"""Operational metrics of one worker: lag, assignment, freshness, readiness, build info."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adoptstream import __version__
from adoptstream.core.totals import SECOND_NS


class HeldPartition(Protocol):
    """A partition a stage holds back (what `stats.Stuck` holds): why, where, since when."""

    @property
    def stage(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def offset(self) -> int | None: ...

    @property
    def since_s(self) -> float: ...


class Progress(Protocol):
    """How far a worker's stages are (what `WorkerStats` holds), read at scrape time."""

    positions: dict[tuple[str, int], tuple[int, int]]  # (topic, partition) -> (next offset, high watermark)
    last_event_ts_ns: int | None
    last_processed_s: float | None
    restore_duration_s: float

    @property
    def stuck(self) -> dict[tuple[str, int], HeldPartition]: ...  # (topic, partition) -> why it is held

    @property
    def failing_since_s(self) -> dict[str, float]: ...  # stage -> wall clock its batches started failing

    @property
    def recent_loop_lags_s(self) -> Iterable[float]: ...  # the event loop's lags of the last minute


class WorkerStatus(Protocol):
    """What the operations collector and the web endpoints read of a worker."""

    @property
    def ready(self) -> bool: ...

    @property
    def started_at(self) -> float: ...

    @property
    def consumed_topics(self) -> tuple[str, ...]: ...

    @property
    def progress(self) -> Progress: ...


STAGES = ("ingest", "state")
_FAMILIES = (
    (
        "adoptstream_consumer_lag_records",
        "Records not yet processed, per assigned partition.",
        ["topic", "partition"],
    ),
    ("adoptstream_assigned_partitions", "Partitions assigned to this worker.", ["topic"]),
    (
        "adoptstream_stuck_partitions",
        "Assigned partitions held back because they cannot be read, applied or restored (retried with"
        " backoff; nothing of them is skipped).",
        ["topic"],
    ),
    (
        "adoptstream_stage_failing_seconds",
        "How long the stage's batches have been failing (a broker or network error) without one going"
        " through; 0 when the last went through.",
        ["stage"],
    ),
    (
        "adoptstream_event_loop_lag_max_seconds",
        "Worst lateness of the event loop (consumers, heartbeats, scrapes) over the last minute.",
        [],
    ),
    ("adoptstream_last_event_timestamp_seconds", "Latest event time (ts) among accepted events.", []),
    ("adoptstream_last_processed_timestamp_seconds", "Wall clock when the last batch was applied.", []),
    ("adoptstream_state_restore_duration_seconds", "Duration of the latest state restore.", []),
    ("adoptstream_ready", "1 when the worker serves exact numbers.", []),
    ("adoptstream_build_info", "Version of this worker.", ["version"]),
    ("adoptstream_start_time_seconds", "Worker start time.", []),
)


class OperationsCollector(Collector):
    """Lag, freshness, assignment, readiness and build info of one worker."""

    def __init__(self, status: WorkerStatus) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in _FAMILIES]

    def collect(self) -> Iterator[Metric]:
        status = self._status
        progress = status.progress
        (
            lag,
            assigned_partitions,
            stuck,
            failing,
            loop_lag,
            last_event,
            last_processed,
            restore,
            ready,
            info,
            start,
        ) = self.describe()
        assigned: dict[str, int] = defaultdict(int)
        for (topic, partition), (pos, high) in sorted(progress.positions.items()):
            lag.add_metric([topic, str(partition)], max(0, high - pos))
            assigned[topic] += 1
        yield lag
        held: dict[str, int] = defaultdict(int)
        for topic, _ in list(progress.stuck):
            held[topic] += 1
        for topic in status.consumed_topics:
            assigned_partitions.add_metric([topic], assigned.get(topic, 0))
            stuck.add_metric([topic], held.get(topic, 0))
        yield assigned_partitions
        yield stuck
        now = time.time()
        since = dict(progress.failing_since_s)
        for stage in STAGES:
            failing.add_metric([stage], max(0.0, now - since[stage]) if stage in since else 0.0)
        yield failing
        loop_lag.add_metric([], max(progress.recent_loop_lags_s, default=0.0))
        yield loop_lag
        if progress.last_event_ts_ns is not None:
            last_event.add_metric([], progress.last_event_ts_ns / SECOND_NS)
            yield last_event
        if progress.last_processed_s is not None:
            last_processed.add_metric([], progress.last_processed_s)
            yield last_processed
        restore.add_metric([], progress.restore_duration_s)
        yield restore
        ready.add_metric([], 1.0 if status.ready else 0.0)
        yield ready
        info.add_metric([__version__], 1)
        yield info
        start.add_metric([], status.started_at)
        yield start
