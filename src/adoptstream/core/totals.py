"""Aggregates derived from per-user state: the numbers of CONTRACT sections 2 and 3.

`AdoptionTotals` is additive: `add_user(state, +1)` before and `add_user(state, -1)` after an update
keep it exact, two totals merge by addition, and a partition's totals are rebuilt from its users on
assignment. Every aggregate is keyed by absolute times, never by "now": active users are counted per
hour of their latest use, so any window that starts on an hour boundary is an exact sum; the
calendar periods of section 3 are sums over dates, taken at scrape time for the date of the scrape.
So the periods move on at the turn of a UTC day with no work on any user.

Section 3 per feature: the dates of use in `periods.UseDates` (ranks, returns, next-day fixes,
and their answers kept live at the state stage's date); feedback by (date of the latest answer,
score) per (feature, scale); signups by the date of the earliest. `advance(today)` is the state
stage's day turn: it slides the live answers to the new date and drops every date-keyed count no
period can reach any more (later adds and removes skip them alike), so these aggregates stay
bounded by dates and features, not users, and neither the day turn nor a scrape walks the users.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import repeat

from adoptstream.core.codec import dumps, loads
from adoptstream.core.events import SCALES
from adoptstream.core.periods import DatedCounts, Engagement, Live, UseDates
from adoptstream.core.state import (
    DAY_NS,
    TASK_BUCKETS_MS,
    Answer,
    SourceOutcomes,
    TaskTimes,
    UserState,
    UserSummary,
)

ANY_FEATURE = "*"
UNASSIGNED = "unassigned"
HOUR_NS = 3_600 * 1_000_000_000
SECOND_NS = 1_000_000_000
_TOTALS_VERSION = 2
WINDOWS_DAYS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30}
TTFU_BUCKETS_S: tuple[int, ...] = (60, 300, 900, 3600, 14400, 86400, 259200, 604800, 2592000)
_TTFU_BOUNDS_NS = tuple(b * SECOND_NS for b in TTFU_BUCKETS_S)

SIGNUP_PERIODS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30}
FEEDBACK_PERIODS: dict[str, int] = {"30d": 30, "90d": 90}
_SIGNUP_N, _FEEDBACK_N = tuple(SIGNUP_PERIODS.values()), tuple(FEEDBACK_PERIODS.values())
DatesOfUse = dict[str, tuple[list[int], int]]  # feature ('*') -> (its dates of use, date of the first use)
_SCORE_SLOTS = 16  # answer counts pack (date, score) into one int
TOTALS_DAYS_KEPT = 91  # C of the 90-day feedback period starts at D - 89 (one day of slack)
_NO_FLOOR = -(1 << 62)


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


@dataclass(slots=True)
class TaskTimeHistogram:
    """Task durations of many uses: non-cumulative counts per TASK_BUCKETS_MS bucket, exact sum in ms."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(TASK_BUCKETS_MS) + 1))
    sum_ms: int = 0

    def add(self, times: TaskTimes | TaskTimeHistogram, sign: int = 1) -> None:
        counts = self.counts
        if type(times) is TaskTimes:
            for bucket, n in times.counts.items():
                counts[bucket] += sign * n
        else:
            for bucket, n in enumerate(times.counts):  # type: ignore[arg-type]
                counts[bucket] += sign * n
        self.sum_ms += sign * times.sum_ms


def window_start_hour(now_ns: int, days: int) -> int:
    """First hour index (ns // HOUR_NS) inside a window of `days` ending in the current UTC hour."""
    return now_ns // HOUR_NS - (24 * days - 1)


def _counts_by() -> defaultdict:
    return defaultdict(lambda: defaultdict(int))


@dataclass(slots=True)
class AdoptionTotals:
    """Additive aggregates over a set of users (one partition, or merged for a worker)."""

    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    feature_users: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    active_hours: dict[str, dict[int, int]] = field(default_factory=_counts_by)
    exposed: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    adopted: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    ttfu: dict[str, Histogram] = field(default_factory=lambda: defaultdict(Histogram))
    uses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # section 3
    use_dates: dict[str, UseDates] = field(default_factory=dict)
    signup_days: DatedCounts = field(default_factory=lambda: DatedCounts(_SIGNUP_N, 1))
    answer_days: dict[tuple[str, str], DatedCounts] = field(default_factory=dict)  # (feature, scale)
    answered: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    task_times: dict[str, TaskTimeHistogram] = field(default_factory=lambda: defaultdict(TaskTimeHistogram))
    day_floor: int = _NO_FLOOR  # date-keyed counts before this date are dropped
    fix_floor: int = _NO_FLOOR  # next-day fixes of a latest date before this are dropped
    today: int | None = field(default=None, compare=False)  # the state stage's date (live answers)
    # scrape-time answers (active users per hour, engagement per date), until the totals change
    _memo: dict[tuple, object] = field(default_factory=dict, repr=False, compare=False)

    def add_user(self, user: UserState | UserSummary, sign: int = 1) -> None:
        """Add (sign=+1) or remove (sign=-1) one user's contribution."""
        outcomes = self.outcomes
        outcomes["accepted"] += sign * user.accepted
        outcomes["duplicate"] += sign * user.duplicates
        if user.future:
            outcomes["future"] += sign * user.future
        self.add_adoption(user, sign)

    def add_adoption(
        self, user: UserState | UserSummary, sign: int = 1, with_dates: bool = True
    ) -> DatesOfUse | None:
        """`add_user` without the outcome counts (the state stage counts outcomes as it applies).

        `with_dates=False` leaves the dates of use out and returns them, for `replace_use_dates`.
        Once per touched user and batch, so written for speed: the any-feature extremes tracked in
        the loop, the memo cleared only when it holds something.
        """
        if self._memo:
            self._memo.clear()
        feature_users, uses, active_hours = self.feature_users, self.uses, self.active_hours
        exposed, adopted, ttfu = self.exposed, self.adopted, self.ttfu
        dates_of_use: DatesOfUse = {}
        use_dates, floor, fix_floor = self.use_dates, self.day_floor, self.fix_floor
        first_use_any = last_use_any = None
        for name, fs in user.features.items():
            feature_users[name] += sign
            if fs.answers:
                self._add_answers(name, fs.answers, sign)
            exposure, last_use = fs.exposure_ns, fs.last_use_ns
            if last_use is None:  # exposed (or answered), never used
                if exposure is not None:
                    exposed[(name, fs.exposure_cohort or UNASSIGNED)] += sign
                continue
            first_use = fs.first_use_ns
            uses[name] += sign * fs.uses
            active_hours[name][last_use // HOUR_NS] += sign
            if with_dates:
                dates = use_dates.get(name) or self._new_use_dates(name)
                dates.add(fs.use_days, first_use // DAY_NS, sign, floor, fix_floor)  # type: ignore[operator]
            else:
                dates_of_use[name] = (fs.use_days, first_use // DAY_NS)  # type: ignore[operator]
            if fs.task_times is not None:
                self.task_times[name].add(fs.task_times, sign)
            if last_use_any is None:
                first_use_any, last_use_any = first_use, last_use
            else:
                if last_use > last_use_any:
                    last_use_any = last_use
                if first_use < first_use_any:  # type: ignore[operator]
                    first_use_any = first_use
            if exposure is not None:
                key = (name, fs.exposure_cohort or UNASSIGNED)
                exposed[key] += sign
                adopted[key] += sign
                ttfu[name].observe(first_use - exposure, sign)  # type: ignore[operator]
        if last_use_any is not None:
            active_hours[ANY_FEATURE][last_use_any // HOUR_NS] += sign
            if with_dates:
                dates = use_dates.get(ANY_FEATURE) or self._new_use_dates(ANY_FEATURE)
                dates.add(user.use_days, first_use_any // DAY_NS, sign, floor, fix_floor)  # type: ignore[operator]
            else:
                dates_of_use[ANY_FEATURE] = (user.use_days, first_use_any // DAY_NS)  # type: ignore[operator]
        if user.answers:
            self._add_answers(ANY_FEATURE, user.answers, sign)
        signup = user.signup_ns
        if signup is not None:
            key = (ANY_FEATURE, user.signup_cohort or UNASSIGNED)
            exposed[key] += sign
            day = signup // DAY_NS
            if day >= floor:
                self.signup_days.add(day, 0, sign)
            if first_use_any is not None:
                adopted[key] += sign
                ttfu[ANY_FEATURE].observe(first_use_any - signup, sign)
        return None if with_dates else dates_of_use

    def replace_use_dates(self, before: DatesOfUse | None, after: DatesOfUse | None) -> None:
        """One user's dates of use were `before` (None: not counted) and are now `after` (None: not
        to be counted). What did not change (the same list, which the state replaces whenever its
        dates change, and the same earliest date) is neither removed nor added: a user touched again
        on a date it already used costs nothing here, whatever its history."""
        floor, fix_floor = self.day_floor, self.fix_floor
        if before:
            for name, (days, first_day) in before.items():
                now = after.get(name) if after else None
                if now is None or now[0] is not days or now[1] != first_day:
                    dates = self.use_dates.get(name)
                    if dates is None:  # all its counts were dropped (dated before the floor)
                        dates = self._new_use_dates(name)
                    dates.add(days, first_day, -1, floor, fix_floor)
        if after:
            for name, (days, first_day) in after.items():
                was = before.get(name) if before else None
                if was is None or was[0] is not days or was[1] != first_day:
                    dates = self.use_dates.get(name)
                    if dates is None:
                        dates = self._new_use_dates(name)
                    dates.add(days, first_day, 1, floor, fix_floor)

    def _new_use_dates(self, name: str) -> UseDates:
        dates = self.use_dates[name] = UseDates()
        if self.today is not None:
            dates.live = Live(self.today)  # no counts yet: every answer 0
        return dates

    def _add_answers(self, name: str, answers: dict[str, Answer], sign: int) -> None:
        answered, answer_days, floor = self.answered, self.answer_days, self.day_floor
        for scale, answer in answers.items():
            key = (name, scale)
            answered[key] += sign
            day = answer.ts_ns // DAY_NS
            if day >= floor:
                dated = answer_days.get(key)
                if dated is None:
                    dated = answer_days[key] = DatedCounts(_FEEDBACK_N, _SCORE_SLOTS)
                    if self.today is not None:
                        dated.go_to(self.today)
                dated.add(day, answer.score, sign)

    def add_source(self, source: SourceOutcomes, sign: int = 1) -> None:
        """Add or remove the invalid/future counts of one input partition."""
        self.outcomes["invalid"] += sign * source.invalid
        self.outcomes["future"] += sign * source.future

    def advance(self, today: int) -> None:
        """The state stage's clock reads date `today` (days since the epoch): the day turn.

        Live answers move to `today`; counts dated before `today - TOTALS_DAYS_KEPT`, and next-day
        fixes of a latest date up to `today`, are dropped here and skipped by every later add and
        remove.
        """
        if today != self.today:  # first: a slide takes out the next-day fixes of the day that ends
            self.today = today
            for dates in self.use_dates.values():
                dates.go_to(today)
            for dated in (self.signup_days, *self.answer_days.values()):
                dated.go_to(today)
        self._raise_floors(today - TOTALS_DAYS_KEPT, today + 1)

    def _raise_floors(self, day_floor: int, fix_floor: int) -> None:
        self._memo.clear()
        if day_floor > self.day_floor or fix_floor > self.fix_floor:
            old_floor = self.day_floor
            self.day_floor = max(old_floor, day_floor)
            self.fix_floor = max(self.fix_floor, fix_floor)
            for dates in self.use_dates.values():
                dates.drop_before(self.day_floor, self.fix_floor, old_floor)
            for dated in (self.signup_days, *self.answer_days.values()):
                dated.drop_before(self.day_floor, old_floor)

    def merge(self, other: AdoptionTotals, section_3: bool = True) -> None:
        """Add another totals into this one (without the section 3 aggregates, when not asked for:
        the engagement collector sums those per partition)."""
        self._raise_floors(other.day_floor, other.fix_floor)
        for k, v in other.outcomes.items():
            self.outcomes[k] += v
        for k, v in other.feature_users.items():
            self.feature_users[k] += v
        _merge_nested(self.active_hours, other.active_hours)
        for k, v in other.exposed.items():
            self.exposed[k] += v
        for k, v in other.adopted.items():
            self.adopted[k] += v
        for k, hist in other.ttfu.items():
            self.ttfu[k].merge(hist)
        for k, v in other.uses.items():
            self.uses[k] += v
        if not section_3:
            return
        floor, fix_floor = self.day_floor, self.fix_floor
        for name, dates in other.use_dates.items():
            mine = self.use_dates.get(name)
            if mine is None:
                mine = self.use_dates[name] = UseDates()
            mine.merge(dates, floor, fix_floor)
        self.signup_days.merge(other.signup_days, floor)
        for key, dated in other.answer_days.items():
            mine = self.answer_days.get(key)
            if mine is None:
                mine = self.answer_days[key] = DatedCounts(_FEEDBACK_N, _SCORE_SLOTS)
            mine.merge(dated, floor)
        for k, v in other.answered.items():
            self.answered[k] += v
        for k, times in other.task_times.items():
            self.task_times[k].add(times)

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
                self.day_floor,
                self.fix_floor,
                [[name, fields] for name, dates in self.use_dates.items() if any(fields := dates.encode())],
                _pairs(self.signup_days.counts),
                [
                    [f, s, _pairs(counts)]
                    for (f, s), counts in ((k, d.counts) for k, d in self.answer_days.items())
                    if any(counts.values())
                ],
                [[f, s, n] for (f, s), n in self.answered.items() if n],
                [
                    [k, h.counts, str(h.sum_ms)]
                    for k, h in self.task_times.items()
                    if h.sum_ms or any(h.counts)
                ],
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> AdoptionTotals:
        """Inverse of `encode`."""
        fields = loads(data)
        if fields[0] != _TOTALS_VERSION:
            raise ValueError(f"unknown totals version {fields[0]}")
        (
            _,
            outcomes,
            feature_users,
            active_hours,
            exposed,
            adopted,
            ttfu,
            uses,
            day_floor,
            fix_floor,
            use_dates,
            signup_days,
            answer_days,
            answered,
            task_times,
        ) = fields
        totals = cls(day_floor=day_floor, fix_floor=fix_floor)
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
        for name, fields in use_dates:
            totals.use_dates[name] = UseDates.decode(fields)
        totals.signup_days.counts.update(signup_days)
        for f, s, pairs in answer_days:
            dated = totals.answer_days[(f, s)] = DatedCounts(_FEEDBACK_N, _SCORE_SLOTS)
            dated.counts.update(pairs)
        totals.answered.update(((f, s), n) for f, s, n in answered)
        for name, counts, sum_ms in task_times:
            totals.task_times[name] = TaskTimeHistogram(counts, int(sum_ms))
        return totals

    def features(self) -> list[str]:
        """Features seen in any accepted event, plus '*'."""
        return seen_features([self])

    def active_users(self, feature: str, now_ns: int) -> dict[str, int]:
        """Distinct users with a use of `feature` in each window, at wall-clock `now_ns` (read only).

        Remembered per clock hour until the totals change: scrapes between two batches (a benchmark
        polls every 25 ms) do not sum a month of hourly buckets again.
        """
        memo_key = ("active", feature, now_ns // HOUR_NS)
        out = self._memo.get(memo_key)
        if out is None:
            out = self._memo[memo_key] = self._active_users(feature, now_ns)
        return out  # type: ignore[return-value]

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

    def engagement(self, feature: str, today: int) -> Engagement:
        """Active days and lifecycle of `feature` ('*': any) at date `today` (read only; memoized)."""
        memo_key = ("engagement", feature, today)
        out = self._memo.get(memo_key)
        if out is None:
            dates = self.use_dates.get(feature) or UseDates()
            out = self._memo[memo_key] = dates.engagement(today)
        return out  # type: ignore[return-value]

    def signed_up(self, today: int) -> dict[str, int]:
        """Users whose earliest signup is dated in each period's C at date `today` (read only)."""
        sums = self.signup_days.at(today)
        return {period: sums[i][0] for i, period in enumerate(SIGNUP_PERIODS)}

    def feedback(self, feature: str, scale: str, today: int) -> dict[str, dict[int, int]]:
        """Users by the score of their latest answer on `scale` about `feature`, dated in each
        period's C at date `today` (read only)."""
        low, high = SCALES[scale]
        dated = self.answer_days.get((feature, scale))
        sums = dated.at(today) if dated is not None else [[0] * _SCORE_SLOTS for _ in FEEDBACK_PERIODS]
        return {
            period: {score: sums[i][score] for score in range(low, high + 1)}
            for i, period in enumerate(FEEDBACK_PERIODS)
        }


def _merge_counts(mine: dict[int, int], other: dict[int, int], first_key: int = _NO_FLOOR) -> None:
    for key, n in other.items():
        if key >= first_key:
            mine[key] += n


def _merge_nested(mine: dict, other: dict, first_key: int = _NO_FLOOR) -> None:
    for name, counts in other.items():
        _merge_counts(mine[name], counts, first_key)


def _nonzero(counts: dict) -> dict:
    return {k: n for k, n in counts.items() if n}


def _pairs(counts: dict[int, int]) -> list[list[int]]:
    return [[k, n] for k, n in counts.items() if n]


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
