"""Aggregates derived from per-user state: the numbers of CONTRACT section 2.

`AdoptionTotals` is additive: `add_user(state, +1)` before and `add_user(state, -1)` after an update
keep it exact, two totals merge by addition, and a partition's totals are rebuilt from its users on
assignment. Active users are counted per hour of their latest use, so any window that starts on an
hour boundary is an exact sum.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import repeat

from adoptstream.core.codec import dumps, loads
from adoptstream.core.state import SourceOutcomes, UserState, UserSummary

ANY_FEATURE = "*"
UNASSIGNED = "unassigned"
HOUR_NS = 3_600 * 1_000_000_000
SECOND_NS = 1_000_000_000
_TOTALS_VERSION = 1
WINDOWS_DAYS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30}
TTFU_BUCKETS_S: tuple[int, ...] = (60, 300, 900, 3600, 14400, 86400, 259200, 604800, 2592000)
_TTFU_BOUNDS_NS = tuple(b * SECOND_NS for b in TTFU_BUCKETS_S)


@dataclass(slots=True)
class Histogram:
    """Non-cumulative bucket counts plus the exact sum in ns."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(TTFU_BUCKETS_S) + 1))
    sum_ns: int = 0

    def observe(self, value_ns: int, sign: int) -> None:
        """Add (sign=+1) or remove (sign=-1) one value; negative values count as 0."""
        if value_ns > 0:
            self.counts[bisect_left(_TTFU_BOUNDS_NS, value_ns)] += sign  # len(bounds): +Inf
            self.sum_ns += sign * value_ns
        else:
            self.counts[0] += sign

    def merge(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.sum_ns += other.sum_ns

    @property
    def count(self) -> int:
        return sum(self.counts)


def window_start_hour(now_ns: int, days: int) -> int:
    """First hour index (ns // HOUR_NS) inside a window of `days` ending in the current UTC hour."""
    return now_ns // HOUR_NS - (24 * days - 1)


@dataclass(slots=True)
class AdoptionTotals:
    """Additive aggregates over a set of users (one partition, or merged for a worker)."""

    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    feature_users: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    active_hours: dict[str, dict[int, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    exposed: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    adopted: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    ttfu: dict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    uses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (feature, hour of the clock) -> active_users' answer, until the totals change
    _active_memo: dict[tuple[str, int], dict[str, int]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def add_user(self, user: UserState | UserSummary, sign: int = 1) -> None:
        """Add (sign=+1) or remove (sign=-1) one user's contribution."""
        outcomes = self.outcomes
        outcomes["accepted"] += sign * user.accepted
        outcomes["duplicate"] += sign * user.duplicates
        if user.future:
            outcomes["future"] += sign * user.future
        self.add_adoption(user, sign)

    def add_adoption(self, user: UserState | UserSummary, sign: int = 1) -> None:
        """`add_user` without the outcome counts (the state stage counts outcomes as it applies).

        Once per touched user and batch, so written for speed: the any-feature extremes tracked in
        the loop, the memo cleared only when it holds something.
        """
        if self._active_memo:
            self._active_memo.clear()
        feature_users, uses, active_hours = self.feature_users, self.uses, self.active_hours
        exposed, adopted, ttfu = self.exposed, self.adopted, self.ttfu
        first_use_any = last_use_any = None
        for name, fs in user.features.items():
            feature_users[name] += sign
            exposure, last_use = fs.exposure_ns, fs.last_use_ns
            if last_use is None:  # exposed, never used
                if exposure is not None:
                    exposed[(name, fs.exposure_cohort or UNASSIGNED)] += sign
                continue
            first_use = fs.first_use_ns
            uses[name] += sign * fs.uses
            active_hours[name][last_use // HOUR_NS] += sign
            if last_use_any is None:
                first_use_any, last_use_any = first_use, last_use
            else:
                if last_use > last_use_any:
                    last_use_any = last_use
                if first_use < first_use_any:
                    first_use_any = first_use
            if exposure is not None:
                key = (name, fs.exposure_cohort or UNASSIGNED)
                exposed[key] += sign
                adopted[key] += sign
                ttfu[name].observe(first_use - exposure, sign)
        if last_use_any is not None:
            active_hours[ANY_FEATURE][last_use_any // HOUR_NS] += sign
        signup = user.signup_ns
        if signup is not None:
            key = (ANY_FEATURE, user.signup_cohort or UNASSIGNED)
            exposed[key] += sign
            if first_use_any is not None:
                adopted[key] += sign
                ttfu[ANY_FEATURE].observe(first_use_any - signup, sign)

    def add_source(self, source: SourceOutcomes, sign: int = 1) -> None:
        """Add or remove the invalid/future counts of one input partition."""
        self.outcomes["invalid"] += sign * source.invalid
        self.outcomes["future"] += sign * source.future

    def merge(self, other: AdoptionTotals) -> None:
        """Add another totals into this one."""
        self._active_memo.clear()
        for k, v in other.outcomes.items():
            self.outcomes[k] += v
        for k, v in other.feature_users.items():
            self.feature_users[k] += v
        for name, hours in other.active_hours.items():
            mine = self.active_hours[name]
            for h, c in hours.items():
                mine[h] += c
        for k, v in other.exposed.items():
            self.exposed[k] += v
        for k, v in other.adopted.items():
            self.adopted[k] += v
        for k, hist in other.ttfu.items():
            self.ttfu[k].merge(hist)
        for k, v in other.uses.items():
            self.uses[k] += v

    def encode(self) -> bytes:
        """Versioned serialization of the non-zero counts (a partition's snapshot in its store)."""
        hours = self.active_hours.items()
        return dumps(
            [
                _TOTALS_VERSION,
                _nonzero(self.outcomes),
                _nonzero(self.feature_users),
                [[name, [[h, n] for h, n in by_hour.items() if n]] for name, by_hour in hours],
                [[f, c, n] for (f, c), n in self.exposed.items() if n],
                [[f, c, n] for (f, c), n in self.adopted.items() if n],
                # sums in ns pass 64 bits quickly (a month times a million users): written as text
                [[k, h.counts, str(h.sum_ns)] for k, h in self.ttfu.items() if h.sum_ns or any(h.counts)],
                _nonzero(self.uses),
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> AdoptionTotals:
        """Inverse of `encode`."""
        version, outcomes, feature_users, active_hours, exposed, adopted, ttfu, uses = loads(data)
        if version != _TOTALS_VERSION:
            raise ValueError(f"unknown totals version {version}")
        totals = cls()
        totals.outcomes.update(outcomes)
        totals.feature_users.update(feature_users)
        for name, hours in active_hours:
            if hours:
                totals.active_hours[name].update((h, n) for h, n in hours)
        totals.exposed.update(((f, c), n) for f, c, n in exposed)
        totals.adopted.update(((f, c), n) for f, c, n in adopted)
        for name, counts, sum_ns in ttfu:
            totals.ttfu[name] = Histogram(counts, int(sum_ns))
        totals.uses.update(uses)
        return totals

    def features(self) -> list[str]:
        """Features seen in any accepted event, plus '*'."""
        return seen_features([self])

    def active_users(self, feature: str, now_ns: int) -> dict[str, int]:
        """Distinct users with a use of `feature` in each window, at wall-clock `now_ns` (read only).

        Remembered per clock hour until the totals change: scrapes between two batches (a benchmark
        polls every 25 ms) do not sum a month of hourly buckets again.
        """
        memo_key = (feature, now_ns // HOUR_NS)
        out = self._active_memo.get(memo_key)
        if out is None:
            out = self._active_memo[memo_key] = self._active_users(feature, now_ns)
        return out

    def _active_users(self, feature: str, now_ns: int) -> dict[str, int]:
        hours = self.active_hours.get(feature)
        out = dict.fromkeys(WINDOWS_DAYS, 0)
        if not hours:
            return out
        last = max(hours)
        get = hours.get
        for window, days in WINDOWS_DAYS.items():
            start = window_start_hour(now_ns, days)
            if last < start:
                continue
            if last - start <= 48 * days:  # the usual case: every hour of the window looked up, in C
                out[window] = sum(map(get, range(start, last + 1), repeat(0)))
            else:  # hours far ahead of this clock: walk the buckets instead of the range
                out[window] = sum(c for h, c in hours.items() if h >= start)
        return out


def _nonzero(counts: dict) -> dict:
    return {k: n for k, n in counts.items() if n}


def seen_features(parts: Iterable[AdoptionTotals]) -> list[str]:
    """'*' and, sorted, the features seen in any accepted event of any of `parts` (= of their sum)."""
    seen = {f for totals in parts for f, n in totals.feature_users.items() if n > 0}
    return [ANY_FEATURE, *sorted(seen)]


def totals_of(users: Iterable[UserState], sources: Iterable[SourceOutcomes] = ()) -> AdoptionTotals:
    """Totals built from scratch (partition assignment, tests)."""
    totals = AdoptionTotals()
    for user in users:
        totals.add_user(user)
    for source in sources:
        totals.add_source(source)
    return totals
