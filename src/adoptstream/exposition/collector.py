"""Prometheus collectors built at scrape time from the worker's live state (no stale label sets)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from adoptstream import __version__
from adoptstream.core.totals import (
    ANY_FEATURE,
    SECOND_NS,
    TTFU_BUCKETS_S,
    WINDOWS_DAYS,
    AdoptionTotals,
    Histogram,
    seen_features,
)

if TYPE_CHECKING:
    from adoptstream.runtime.worker import Worker

OVERFLOW = "__overflow__"
OUTCOMES = ("accepted", "duplicate", "invalid", "future")
FAMILIES = (  # what AdoptionCollector exports; the outcome counter first
    "adoptstream_events",
    "adoptstream_active_users",
    "adoptstream_exposed_users",
    "adoptstream_adopted_users",
    "adoptstream_time_to_first_use_seconds",
    "adoptstream_feature_uses",
    "adoptstream_label_overflow_values",
)
# sums over partitions: a filtered scrape builds them without merging the partitions' totals
_SUMMABLE = frozenset(("adoptstream_events", "adoptstream_active_users", "adoptstream_feature_uses"))


class TotalsSource(Protocol):
    """What the collector reads: the merged totals (and, optionally, `partition_totals()`: the parts
    they are the sum of, which lets a filtered scrape skip the merge)."""

    def merged_totals(self) -> AdoptionTotals: ...


_SUFFIXES = ("", "_total", "_created", "_bucket", "_sum", "_count")


def restricted(metrics: Iterable[Metric], names: Collection[str] | None) -> Iterator[Metric]:
    """Only the samples named in `names` (Prometheus' `name[]` filter); None: everything."""
    for metric in metrics:
        if names is None:
            yield metric
            continue
        samples = [s for s in metric.samples if s.name in names]
        if samples:
            only = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            only.samples = samples
            yield only


def wants(family: str, names: Collection[str] | None) -> bool:
    """Does a `name[]` filter (None: no filter) ask for any sample of this family?"""
    return names is None or any(family + suffix in names for suffix in _SUFFIXES)


class LabelCap:
    """Admits label values first come, first served up to `cap`; later values fold into OVERFLOW."""

    def __init__(self, cap: int, always: Iterable[str] = ()) -> None:
        self.cap = cap
        self._always = set(always)
        self._admitted: set[str] = set()
        self.folded: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._admitted or value in self._always:
            return value
        if value in self.folded:
            return OVERFLOW
        if len(self._admitted) < self.cap:
            self._admitted.add(value)
            return value
        self.folded.add(value)
        return OVERFLOW


class AdoptionCollector(Collector):
    """The contract metrics (CONTRACT section 2) from the totals of the partitions this worker owns."""

    def __init__(
        self, source: TotalsSource, max_features: int, max_cohorts: int, clock_ns: callable = time.time_ns
    ) -> None:
        self._source = source
        self.features = LabelCap(max_features, always=[ANY_FEATURE])
        self.cohorts = LabelCap(max_cohorts)
        self._clock_ns = clock_ns

    def describe(self) -> list[Metric]:
        return []  # families are dynamic; registering must not trigger a collect

    def collect(self) -> Iterator[Metric]:
        return self.collect_named(None)

    def collect_named(self, names: Collection[str] | None) -> Iterator[Metric]:
        """The families named in a `name[]` filter (None: all).

        Asking only for the summable families (outcomes, active users, feature uses: what the
        benchmarks poll) skips merging the partitions' aggregates: each is summed over the
        partitions' own totals.
        """
        if names is not None and not any(wants(f, names) for f in FAMILIES if f not in _SUMMABLE):
            partition_totals = getattr(self._source, "partition_totals", None)
            parts = partition_totals() if partition_totals else [self._source.merged_totals()]
            features = seen_features(parts)
            for name in features:  # admitted in the same order as a full scrape does
                self.features(name)
            if wants("adoptstream_events", names):
                outcomes: dict[str, int] = defaultdict(int)
                for totals in parts:
                    for outcome, n in totals.outcomes.items():
                        outcomes[outcome] += n
                yield from restricted([self._events(outcomes)], names)
            if wants("adoptstream_active_users", names):
                yield from restricted([self._active(features, parts)], names)
            if wants("adoptstream_feature_uses", names):
                yield from restricted([self._uses(features, parts)], names)
            return
        yield from restricted(self._collect_all(), names)

    @staticmethod
    def _events(outcomes: dict[str, int]) -> Metric:
        events = CounterMetricFamily("adoptstream_events", "Messages by outcome.", labels=["outcome"])
        for outcome in OUTCOMES:
            events.add_metric([outcome], outcomes.get(outcome, 0))
        return events

    def _active(self, features: list[str], parts: list[AdoptionTotals], now_ns: int | None = None) -> Metric:
        """Active users per (capped) feature and window, summed over `parts`."""
        now_ns = self._clock_ns() if now_ns is None else now_ns
        active: dict[tuple[str, str], int] = defaultdict(int)
        for name in features:
            capped = self.features(name)
            for totals in parts:
                for window, n in totals.active_users(name, now_ns).items():
                    active[(capped, window)] += n
        g = GaugeMetricFamily(
            "adoptstream_active_users",
            "Distinct users with an accepted use of the feature in the window (hours ending now, UTC).",
            labels=["feature", "window"],
        )
        for (name, window), n in sorted(active.items()):
            g.add_metric([name, window], n)
        return g

    def _uses(self, features: list[str], parts: list[AdoptionTotals]) -> Metric:
        """Accepted uses per (capped) feature, '*' for all, summed over `parts`."""
        uses: dict[str, int] = defaultdict(int)
        for totals in parts:
            for name in features:
                if name != ANY_FEATURE:
                    uses[self.features(name)] += totals.uses.get(name, 0)
            uses[ANY_FEATURE] += sum(totals.uses.values())
        u = CounterMetricFamily(
            "adoptstream_feature_uses", "Accepted use events of the feature.", labels=["feature"]
        )
        for name in sorted(uses):
            u.add_metric([name], uses[name])
        return u

    def _collect_all(self) -> Iterator[Metric]:
        totals = self._source.merged_totals()
        now_ns = self._clock_ns()
        feat, cohort = self.features, self.cohorts
        # admit in a stable order so that the cap is deterministic for a given state
        features = totals.features()
        for name in features:
            feat(name)
        for (_, c), n in sorted(totals.exposed.items()):
            if n > 0:
                cohort(c)

        yield self._events(totals.outcomes)

        yield self._active(features, [totals], now_ns)

        exposed: dict[tuple[str, str], int] = defaultdict(int)
        adopted: dict[tuple[str, str], int] = defaultdict(int)
        for (name, c), n in totals.exposed.items():
            if n > 0:
                key = (feat(name), cohort(c))
                exposed[key] += n
                adopted[key] += totals.adopted.get((name, c), 0)
        ge = GaugeMetricFamily(
            "adoptstream_exposed_users",
            "Distinct users exposed to the feature (*: signed up), by cohort.",
            labels=["feature", "cohort"],
        )
        ga = GaugeMetricFamily(
            "adoptstream_adopted_users",
            "Exposed users with at least one accepted use of the feature.",
            labels=["feature", "cohort"],
        )
        for key in sorted(exposed):
            ge.add_metric(list(key), exposed[key])
            ga.add_metric(list(key), adopted[key])
        yield ge
        yield ga

        hists: dict[str, Histogram] = defaultdict(Histogram)
        for name in features:
            hists[feat(name)].merge(totals.ttfu.get(name) or Histogram())
        h = HistogramMetricFamily(
            "adoptstream_time_to_first_use_seconds",
            "Per adopted user: earliest use minus earliest exposure (*: minus signup), at least 0.",
            labels=["feature"],
        )
        for name in sorted(hists):
            hist = hists[name]
            cumulative, buckets = 0, []
            for bound, count in zip((*TTFU_BUCKETS_S, "+Inf"), hist.counts, strict=True):
                cumulative += count
                buckets.append((str(bound) if bound == "+Inf" else f"{float(bound)}", cumulative))
            h.add_metric([name], buckets, hist.sum_ns / SECOND_NS)
        yield h

        yield self._uses(features, [totals])

        folded = GaugeMetricFamily(
            "adoptstream_label_overflow_values",
            f"Distinct label values folded into {OVERFLOW} because of the configured cap.",
            labels=["label"],
        )
        folded.add_metric(["feature"], len(feat.folded))
        folded.add_metric(["cohort"], len(cohort.folded))
        yield folded


class OperationsCollector(Collector):
    """Lag, freshness, assignment and build info of one worker."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return self.collect_named(None)

    def collect_named(self, names: Collection[str] | None) -> Iterator[Metric]:
        return restricted(self._collect_all(), names)

    def _collect_all(self) -> Iterator[Metric]:
        w = self._worker
        stats = w.stats
        lag = GaugeMetricFamily(
            "adoptstream_consumer_lag_records",
            "Records not yet processed, per assigned partition.",
            labels=["topic", "partition"],
        )
        assigned: dict[str, int] = defaultdict(int)
        for (topic, partition), (pos, high) in sorted(stats.positions.items()):
            lag.add_metric([topic, str(partition)], max(0, high - pos))
            assigned[topic] += 1
        yield lag
        ap = GaugeMetricFamily(
            "adoptstream_assigned_partitions", "Partitions assigned to this worker.", labels=["topic"]
        )
        for topic in (w.config.topic, w.config.repartition_topic):
            ap.add_metric([topic], assigned.get(topic, 0))
        yield ap
        if stats.last_event_ts_ns is not None:
            yield GaugeMetricFamily(
                "adoptstream_last_event_timestamp_seconds",
                "Latest event time (ts) among accepted events.",
                value=stats.last_event_ts_ns / SECOND_NS,
            )
        if stats.last_processed_s is not None:
            yield GaugeMetricFamily(
                "adoptstream_last_processed_timestamp_seconds",
                "Wall clock when the last batch was applied.",
                value=stats.last_processed_s,
            )
        yield GaugeMetricFamily(
            "adoptstream_state_restore_duration_seconds",
            "Duration of the latest state restore.",
            value=stats.restore_duration_s,
        )
        yield GaugeMetricFamily(
            "adoptstream_ready",
            "1 when the worker serves exact numbers.",
            value=1.0 if w.ready and not (w.processor and w.processor.restoring) else 0.0,
        )
        info = GaugeMetricFamily("adoptstream_build_info", "Version of this worker.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("adoptstream_start_time_seconds", "Worker start time.", value=w.started_at)


_ = WINDOWS_DAYS  # windows are part of the exported label set
