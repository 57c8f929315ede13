"""Operational metrics of one worker: lag, assignment, freshness, readiness, build info."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adoptstream import __version__
from adoptstream.core.totals import SECOND_NS


class Progress(Protocol):
    """How far a worker's stages are (what `WorkerStats` holds), read at scrape time."""

    positions: dict[tuple[str, int], tuple[int, int]]  # (topic, partition) -> (next offset, high watermark)
    last_event_ts_ns: int | None
    last_processed_s: float | None
    restore_duration_s: float


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


_FAMILIES = (
    (
        "adoptstream_consumer_lag_records",
        "Records not yet processed, per assigned partition.",
        ["topic", "partition"],
    ),
    ("adoptstream_assigned_partitions", "Partitions assigned to this worker.", ["topic"]),
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
        lag, assigned_partitions, last_event, last_processed, restore, ready, info, start = self.describe()
        assigned: dict[str, int] = defaultdict(int)
        for (topic, partition), (pos, high) in sorted(progress.positions.items()):
            lag.add_metric([topic, str(partition)], max(0, high - pos))
            assigned[topic] += 1
        yield lag
        for topic in status.consumed_topics:
            assigned_partitions.add_metric([topic], assigned.get(topic, 0))
        yield assigned_partitions
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
