"""The contract's families (CONTRACT section 2), built at scrape time from the live totals.

No stale label sets: every scrape builds its families from the current totals. One collector per family
(or pair of families), each describing what it yields, so the registry's `name[]` filter builds only
the families asked for.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from adoptstream.core.totals import (
    ANY_FEATURE,
    SECOND_NS,
    TTFU_BUCKETS_S,
    AdoptionTotals,
    Histogram,
    seen_features,
)

OVERFLOW = "__overflow__"
OUTCOMES = ("accepted", "duplicate", "invalid", "future")


class TotalsSource(Protocol):
    """What the adoption collectors read: the totals of every partition a worker owns, and their sum."""

    def partition_totals(self) -> list[AdoptionTotals]: ...

    def merged_totals(self) -> AdoptionTotals: ...


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


class _Family(Collector):
    """One contract family, built at scrape time; `describe()` names it so the registry can filter."""

    name: str
    kind: type[Metric]
    documentation: str
    labels: tuple[str, ...]

    def __init__(self, source: TotalsSource, caps: Caps, clock_ns: Callable[[], int]) -> None:
        self._source, self._caps, self._clock_ns = source, caps, clock_ns

    def describe(self) -> list[Metric]:
        return [self.family()]

    def family(self) -> Metric:
        """An empty family of this collector's name, type and labels."""
        return self.kind(self.name, self.documentation, labels=list(self.labels))


class Caps:
    """The feature and cohort label caps every family shares, admitted in one stable order.

    `admit()` admits the features and cohorts of the merged totals (sorted) before any family folds
    a value, so which values fold depends on the state, not on which family was scraped first.

    Each cap bounds one label; `pairs` bounds their combinations: past `max_pairs` (feature, cohort)
    pairs, a new pair's cohort folds into OVERFLOW, so a feature's numbers still add up and the
    exposure families have at most `max_pairs` + one overflow series per feature (1,000 features
    times 1,000 cohorts would otherwise be a million).
    """

    def __init__(self, max_features: int, max_cohorts: int, max_pairs: int = 10_000) -> None:
        self.features = LabelCap(max_features, always=[ANY_FEATURE])
        self.cohorts = LabelCap(max_cohorts)
        self.pairs = PairCap(max_pairs)

    def admit_features(self, features: Iterable[str]) -> None:
        for name in features:
            self.features(name)

    def admit_cohorts(self, totals: AdoptionTotals) -> None:
        for (feature, cohort), n in sorted(totals.exposed.items()):
            if n > 0:
                self.pair(feature, cohort)

    def pair(self, feature: str, cohort: str) -> tuple[str, str]:
        """The labels of one (feature, cohort) exposure series, every cap applied."""
        return self.pairs(self.features(feature), self.cohorts(cohort))


class PairCap:
    """Admits (feature, cohort) pairs first come, first served up to `cap`; later ones fold their
    cohort into OVERFLOW (a pair whose cohort is already OVERFLOW always passes)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._admitted: set[tuple[str, str]] = set()
        self.folded: set[tuple[str, str]] = set()

    def __call__(self, feature: str, cohort: str) -> tuple[str, str]:
        pair = (feature, cohort)
        if cohort == OVERFLOW or pair in self._admitted:
            return pair
        if pair not in self.folded and len(self._admitted) < self.cap:
            self._admitted.add(pair)
            return pair
        self.folded.add(pair)
        return feature, OVERFLOW


class EventsCollector(_Family):
    """`adoptstream_events_total{outcome}`: summed over the partitions' own totals (no merge)."""

    name, kind, labels = "adoptstream_events", CounterMetricFamily, ("outcome",)
    documentation = "Messages by outcome."

    def collect(self) -> Iterator[Metric]:
        outcomes: dict[str, int] = defaultdict(int)
        for totals in self._source.partition_totals():
            for outcome, n in totals.outcomes.items():
                outcomes[outcome] += n
        family = self.family()
        for outcome in OUTCOMES:
            family.add_metric([outcome], outcomes.get(outcome, 0))
        yield family


class ActiveUsersCollector(_Family):
    """`adoptstream_active_users{feature,window}`: summed over the partitions' own totals (no merge)."""

    name, kind, labels = "adoptstream_active_users", GaugeMetricFamily, ("feature", "window")
    documentation = (
        "Distinct users with an accepted use of the feature in the window (hours ending now, UTC)."
    )

    def collect(self) -> Iterator[Metric]:
        parts = self._source.partition_totals()
        features = seen_features(parts)
        self._caps.admit_features(features)
        now_ns = self._clock_ns()
        active: dict[tuple[str, str], int] = defaultdict(int)
        for name in features:
            capped = self._caps.features(name)
            for totals in parts:
                for window, n in totals.active_users(name, now_ns).items():
                    active[(capped, window)] += n
        family = self.family()
        for (name, window), n in sorted(active.items()):
            family.add_metric([name, window], n)
        yield family


class FeatureUsesCollector(_Family):
    """`adoptstream_feature_uses_total{feature}`: summed over the partitions' own totals (no merge)."""

    name, kind, labels = "adoptstream_feature_uses", CounterMetricFamily, ("feature",)
    documentation = "Accepted use events of the feature."

    def collect(self) -> Iterator[Metric]:
        parts = self._source.partition_totals()
        features = seen_features(parts)
        self._caps.admit_features(features)
        uses: dict[str, int] = defaultdict(int)
        for totals in parts:
            for name in features:
                if name != ANY_FEATURE:
                    uses[self._caps.features(name)] += totals.uses.get(name, 0)
            uses[ANY_FEATURE] += sum(totals.uses.values())
        family = self.family()
        for name in sorted(uses):
            family.add_metric([name], uses[name])
        yield family


class ExposureCollector(Collector):
    """`adoptstream_exposed_users` and `adoptstream_adopted_users{feature,cohort}` (merged totals)."""

    def __init__(self, source: TotalsSource, caps: Caps, clock_ns: Callable[[], int]) -> None:
        self._source, self._caps = source, caps

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "adoptstream_exposed_users",
                "Distinct users exposed to the feature (*: signed up), by cohort.",
                labels=["feature", "cohort"],
            ),
            GaugeMetricFamily(
                "adoptstream_adopted_users",
                "Exposed users with at least one accepted use of the feature.",
                labels=["feature", "cohort"],
            ),
        )

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        totals = self._source.merged_totals()
        caps = self._caps
        caps.admit_features(totals.features())
        caps.admit_cohorts(totals)
        exposed: dict[tuple[str, str], int] = defaultdict(int)
        adopted: dict[tuple[str, str], int] = defaultdict(int)
        for (name, cohort), n in totals.exposed.items():
            if n > 0:
                key = caps.pair(name, cohort)
                exposed[key] += n
                adopted[key] += totals.adopted.get((name, cohort), 0)
        ge, ga = self._families()
        for key in sorted(exposed):
            ge.add_metric(list(key), exposed[key])
            ga.add_metric(list(key), adopted[key])
        yield ge
        yield ga


class TimeToFirstUseCollector(_Family):
    """`adoptstream_time_to_first_use_seconds{feature}` (merged totals)."""

    name, kind, labels = "adoptstream_time_to_first_use_seconds", HistogramMetricFamily, ("feature",)
    documentation = "Per adopted user: earliest use minus earliest exposure (*: minus signup), at least 0."

    def collect(self) -> Iterator[Metric]:
        totals = self._source.merged_totals()
        features = totals.features()
        self._caps.admit_features(features)
        hists: dict[str, Histogram] = defaultdict(Histogram)
        for name in features:
            hists[self._caps.features(name)].merge(totals.ttfu.get(name) or Histogram())
        family = self.family()
        for name in sorted(hists):
            hist = hists[name]
            cumulative, buckets = 0, []
            for bound, count in zip((*TTFU_BUCKETS_S, "+Inf"), hist.counts, strict=True):
                cumulative += count
                buckets.append((str(bound) if bound == "+Inf" else f"{float(bound)}", cumulative))
            family.add_metric([name], buckets, hist.sum_ns / SECOND_NS)
        yield family


class LabelOverflowCollector(_Family):
    """`adoptstream_label_overflow_values{label}`: values folded into OVERFLOW so far."""

    name, kind, labels = "adoptstream_label_overflow_values", GaugeMetricFamily, ("label",)
    documentation = (
        f"Distinct label values (label feature_cohort: (feature, cohort) pairs) folded into {OVERFLOW}"
        " because of the configured caps."
    )

    def collect(self) -> Iterator[Metric]:
        family = self.family()
        family.add_metric(["feature"], len(self._caps.features.folded))
        family.add_metric(["cohort"], len(self._caps.cohorts.folded))
        family.add_metric(["feature_cohort"], len(self._caps.pairs.folded))
        yield family


class AdoptionCollector(Collector):
    """The contract metrics (CONTRACT section 2) from the totals of the partitions a worker owns.

    Register `parts` one by one (the worker does): each describes its families, so a `name[]` scrape
    builds only what it asks for, and asking only for outcomes, active users or uses skips merging the
    partitions' totals. Registered whole, it yields every family (tests scrape it that way).
    """

    def __init__(
        self,
        source: TotalsSource,
        max_features: int,
        max_cohorts: int,
        clock_ns: Callable[[], int] = time.time_ns,
        max_feature_cohorts: int = 10_000,
    ) -> None:
        self.caps = Caps(max_features, max_cohorts, max_feature_cohorts)
        self.features, self.cohorts = self.caps.features, self.caps.cohorts
        self.parts: list[Collector] = [
            cls(source, self.caps, clock_ns)
            for cls in (
                EventsCollector,
                ActiveUsersCollector,
                ExposureCollector,
                TimeToFirstUseCollector,
                FeatureUsesCollector,
                LabelOverflowCollector,
            )
        ]

    def describe(self) -> list[Metric]:
        return [family for part in self.parts for family in part.describe()]

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()
