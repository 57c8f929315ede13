"""The engagement and satisfaction families of CONTRACT section 3, built at scrape time.

Every family is a count of users (or of uses), so each is summed over the partitions' own totals,
with no merge of them: each partition keeps its answers at the state stage's date up to date. The
calendar periods are those of the scrape's UTC date: they move on at the turn of the day with no
new event.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from adoptstream.core.events import SCALES
from adoptstream.core.periods import ACTIVE_DAYS_PERIODS, LIFECYCLE_PERIODS, LIFECYCLE_STATES
from adoptstream.core.state import DAY_NS, TASK_BUCKETS_MS
from adoptstream.core.totals import (
    ANY_FEATURE,
    FEEDBACK_PERIODS,
    SIGNUP_PERIODS,
    AdoptionTotals,
    TaskTimeHistogram,
    seen_features,
)
from adoptstream.exposition.collector import LabelCap

ACTIVE_DAYS = "adoptstream_active_days_users"
LIFECYCLE = "adoptstream_lifecycle_users"
SIGNED_UP = "adoptstream_signed_up_users"
FEEDBACK = "adoptstream_feedback_users"
TASK_DURATION = "adoptstream_task_duration_seconds"
_TASK_LE = [f"{bound / 1000}" for bound in TASK_BUCKETS_MS] + ["+Inf"]


class PartitionTotalsSource(Protocol):
    """What the collector reads: the totals of each partition the worker owns."""

    def partition_totals(self) -> list[AdoptionTotals]: ...


def _families() -> dict[str, Metric]:
    """Every family this collector yields, empty: what `describe` returns and `collect` fills."""
    return {
        ACTIVE_DAYS: GaugeMetricFamily(
            ACTIVE_DAYS,
            "Distinct users whose accepted uses of the feature fall on exactly `days` dates of the period.",
            labels=["feature", "period", "days"],
        ),
        LIFECYCLE: GaugeMetricFamily(
            LIFECYCLE,
            "Users of the feature by lifecycle state in the period: new, returning, resurrecting, dormant.",
            labels=["feature", "period", "state"],
        ),
        SIGNED_UP: GaugeMetricFamily(
            SIGNED_UP,
            "Distinct users whose earliest accepted signup is dated in the period.",
            labels=["period"],
        ),
        FEEDBACK: GaugeMetricFamily(
            FEEDBACK,
            "Distinct users whose latest answer on the scale about the feature is in the period, by score.",
            labels=["feature", "scale", "period", "score"],
        ),
        TASK_DURATION: HistogramMetricFamily(
            TASK_DURATION,
            "Task durations of accepted uses that carry duration_ms (*: uses of any feature).",
            labels=["feature"],
        ),
    }


class _EngagementFamilies(Collector):
    """Some of the section 3 families; `describe()` names them so the registry's `name[]` filter can pick."""

    names: tuple[str, ...]

    def __init__(
        self, source: PartitionTotalsSource, features: LabelCap, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self._source = source
        self._features = features
        self._clock_ns = clock_ns

    def describe(self) -> list[Metric]:
        families = _families()
        return [families[name] for name in self.names]

    def collect(self) -> Iterator[Metric]:
        parts = self._source.partition_totals()
        features = seen_features(parts)
        for name in features:  # admitted in the same order as the section 2 collectors do
            self._features(name)
        families = self.describe()
        self.fill(families, parts, features, self._clock_ns() // DAY_NS)
        return iter(families)

    def fill(
        self, families: list[Metric], parts: list[AdoptionTotals], features: list[str], today: int
    ) -> None:
        raise NotImplementedError


class ActivityCollector(_EngagementFamilies):
    """`adoptstream_active_days_users` and `adoptstream_lifecycle_users`: one pass over the partitions."""

    names = (ACTIVE_DAYS, LIFECYCLE)

    def fill(
        self, families: list[Metric], parts: list[AdoptionTotals], features: list[str], today: int
    ) -> None:
        active_days, lifecycle = families
        days: dict[tuple[str, str, int], int] = defaultdict(int)
        states: dict[tuple[str, str, str], int] = defaultdict(int)
        for name in features:
            capped = self._features(name)
            for totals in parts:
                engagement = totals.engagement(name, today)
                for period, counts in engagement.active_days.items():
                    for k, count in enumerate(counts, 1):
                        days[(capped, period, k)] += count
                for period, by_state in engagement.lifecycle.items():
                    for state, count in by_state.items():
                        states[(capped, period, state)] += count
        capped_features = sorted({self._features(name) for name in features})
        for name in capped_features:
            for period, n in ACTIVE_DAYS_PERIODS.items():
                for k in range(1, n + 1):
                    active_days.add_metric([name, period, str(k)], days[(name, period, k)])
        for name in capped_features:
            for period in LIFECYCLE_PERIODS:
                for state in LIFECYCLE_STATES:
                    lifecycle.add_metric([name, period, state], states[(name, period, state)])


class SignedUpCollector(_EngagementFamilies):
    """`adoptstream_signed_up_users{period}`."""

    names = (SIGNED_UP,)

    def fill(
        self, families: list[Metric], parts: list[AdoptionTotals], features: list[str], today: int
    ) -> None:
        (family,) = families
        counts = dict.fromkeys(SIGNUP_PERIODS, 0)
        for totals in parts:
            for period, count in totals.signed_up(today).items():
                counts[period] += count
        for period, count in counts.items():
            family.add_metric([period], count)


class FeedbackCollector(_EngagementFamilies):
    """`adoptstream_feedback_users{feature,scale,period,score}`."""

    names = (FEEDBACK,)

    def fill(
        self, families: list[Metric], parts: list[AdoptionTotals], features: list[str], today: int
    ) -> None:
        (family,) = families
        answered: dict[tuple[str, str], int] = defaultdict(int)
        for totals in parts:
            for key, n in totals.answered.items():
                answered[key] += n
        pairs = {(ANY_FEATURE, scale) for scale in SCALES}
        pairs |= {key for key, n in answered.items() if n > 0}
        scores: dict[tuple[str, str, str, int], int] = defaultdict(int)
        capped_pairs = set()
        for name, scale in sorted(pairs):
            capped = self._features(name)
            capped_pairs.add((capped, scale))
            for totals in parts:
                for period, by_score in totals.feedback(name, scale, today).items():
                    for score, count in by_score.items():
                        scores[(capped, scale, period, score)] += count
        for name, scale in sorted(capped_pairs):
            low, high = SCALES[scale]
            for period in FEEDBACK_PERIODS:
                for score in range(low, high + 1):
                    labels = [name, scale, period, str(score)]
                    family.add_metric(labels, scores[(name, scale, period, score)])


class TaskDurationCollector(_EngagementFamilies):
    """`adoptstream_task_duration_seconds{feature}`."""

    names = (TASK_DURATION,)

    def fill(
        self, families: list[Metric], parts: list[AdoptionTotals], features: list[str], today: int
    ) -> None:
        (family,) = families
        hists: dict[str, TaskTimeHistogram] = defaultdict(TaskTimeHistogram)
        for totals in parts:
            for name, times in totals.task_times.items():
                hists[ANY_FEATURE].add(times)
                hists[self._features(name)].add(times)
        for name in sorted({self._features(name) for name in features}):
            hist = hists[name]
            cumulative, buckets = 0, []
            for le, count in zip(_TASK_LE, hist.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric([name], buckets, hist.sum_ms / 1000)


class EngagementCollector(Collector):
    """CONTRACT section 3 from the totals of the partitions this worker owns.

    `features` is the feature label cap shared with the section 2 collectors, so that a feature is
    folded into the overflow value in every family alike. Register `parts` one by one (the worker
    does) for the registry's `name[]` filtering; registered whole, it yields every family.
    """

    def __init__(
        self, source: PartitionTotalsSource, features: LabelCap, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.parts: list[Collector] = [
            cls(source, features, clock_ns)
            for cls in (ActivityCollector, SignedUpCollector, FeedbackCollector, TaskDurationCollector)
        ]

    def describe(self) -> list[Metric]:
        return [family for part in self.parts for family in part.describe()]

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()
