"""Exact per-user adoption state and the rules that apply events to it.

Every update is order-free: earliest times are minima, latest times maxima, counts are guarded by
the (user, event_id) dedup, so any interleaving of the same accepted events gives the same state.
Replays of by-user entries are recognised by their source coordinates (input partition, offset).

States are msgspec structs encoded as JSON arrays (`array_like`): named in code, compact on disk and
in the changelog. A user state starts with its version.

Dates are UTC calendar dates as days since 1970-01-01 (`ts_ns // DAY_NS`). Of the dates of use a
state keeps those from `USE_DAYS_KEPT` days before its latest one: every calendar period ends at
most one day before an event's date (an event dated after D counts as dated D), so older dates
matter only as "there was an earlier use", which the earliest use (kept exactly) tells.
"""

from __future__ import annotations

from bisect import bisect_left

import msgspec

from adoptstream.core.codec import loads
from adoptstream.core.dedup import SeenShards
from adoptstream.core.entries import EventEntry, FutureEntry, InvalidEntry, TimedUseEntry
from adoptstream.core.events import Outcome

DEDUP_WINDOW_MS = 25 * 3_600_000  # contract: at least 24 h of arrivals; one hour of slack
STATE_VERSION = 2
DAY_NS = 86_400 * 1_000_000_000
# the previous period of `30d` starts 59 days before D, D is at most one day before the latest date
# of use: dates older than the latest minus 61 tell nothing an earliest use does not (one day slack)
USE_DAYS_KEPT = 61
# task-duration buckets of CONTRACT 3.3, in ms (le: 0.5 s ... 3600 s, then +Inf)
TASK_BUCKETS_MS: tuple[int, ...] = (
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
    900_000,
    3_600_000,
)
_ACCEPTED, _DUPLICATE, _FUTURE = Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.FUTURE


def _earlier(ts: int, cohort: str | None, cur_ts: int | None, cur_cohort: str | None) -> bool:
    """Is (ts, cohort) before the current earliest? Ties on ts go to the smaller cohort key."""
    if cur_ts is None or ts < cur_ts:
        return True
    return ts == cur_ts and _cohort_key(cohort) < _cohort_key(cur_cohort)


def _cohort_key(cohort: str | None) -> tuple[bool, str]:
    return (cohort is None, cohort or "")


class Answer(msgspec.Struct, array_like=True, gc=False):
    """The latest survey answer on one scale (of two with the same ts, the lower score)."""

    ts_ns: int
    score: int


class TaskTimes(msgspec.Struct, array_like=True, gc=False):
    """Task durations of one user's uses of one feature: bucket counts (sparse) and the exact sum."""

    sum_ms: int = 0
    counts: dict[int, int] = {}  # bucket index (TASK_BUCKETS_MS, len() for +Inf) -> uses

    def observe(self, duration_ms: int) -> None:
        bucket = bisect_left(TASK_BUCKETS_MS, duration_ms)  # le is inclusive
        counts = self.counts
        counts[bucket] = counts.get(bucket, 0) + 1
        self.sum_ms += duration_ms


class FeatureState(msgspec.Struct, array_like=True, gc=False):
    """One user's history with one feature."""

    exposure_ns: int | None = None  # earliest exposure
    exposure_cohort: str | None = None  # the cohort of that exposure
    first_use_ns: int | None = None
    last_use_ns: int | None = None
    uses: int = 0
    use_days: list[int] = []  # distinct dates of use, ascending, from the latest minus USE_DAYS_KEPT
    task_times: TaskTimes | None = None  # of the uses that carry duration_ms
    answers: dict[str, Answer] = {}  # scale -> latest answer about this feature


def with_use_day(days: list[int], day: int) -> list[int]:
    """`days` (ascending, distinct) with `day` added, keeping the dates within USE_DAYS_KEPT of the
    latest: a new list when the dates change, `days` itself when they do not (the totals tell a
    user's changed dates of use by the list's identity)."""
    if not days or day > days[-1]:
        first = bisect_left(days, day - USE_DAYS_KEPT)
        return [*days[first:], day]
    if day < days[-1] - USE_DAYS_KEPT:
        return days
    i = bisect_left(days, day)
    if days[i] == day:
        return days
    return [*days[:i], day, *days[i:]]


def add_answer(answers: dict[str, Answer], scale: str, ts: int, score: int) -> None:
    """Keep the latest answer per scale; of two with the same ts, the lower score (order-free)."""
    current = answers.get(scale)
    if current is None or ts > current.ts_ns or (ts == current.ts_ns and score < current.score):
        answers[scale] = Answer(ts, score)


class UserState(msgspec.Struct, array_like=True, gc=False):
    """Everything adoptstream keeps about one user."""

    version: int = STATE_VERSION
    signup_ns: int | None = None  # earliest signup
    signup_cohort: str | None = None  # the cohort of that signup
    accepted: int = 0
    duplicates: int = 0
    features: dict[str, FeatureState] = {}
    seen: dict[str, int] = {}  # event_id -> arrival ms, for the dedup window
    sources: dict[int, int] = {}  # input partition -> last offset applied
    future: int = 0  # messages of this user rejected as too far ahead of the clock
    use_days: list[int] = []  # distinct dates of use of any feature (as FeatureState.use_days)
    answers: dict[str, Answer] = {}  # scale -> latest answer about anything
    dedup_depth: int = 0  # 0: `seen` holds the dedup memory; else 2**depth shard records (core.dedup)

    def apply(self, entry: EventEntry | FutureEntry, memory: SeenShards | None = None) -> Outcome | None:
        """Apply one by-user entry of this user: its outcome, or None for a replay (already applied).

        `memory` is this user's dedup memory when it lives in shard records (`dedup_depth` > 0). A
        future entry is counted here, in the user's state, rather than per input partition: if that
        message is read again later and no longer looks future, its replay is recognised and it keeps
        one outcome.
        """
        sources = self.sources
        src_partition, src_offset = entry.src_partition, entry.src_offset
        last = sources.get(src_partition)
        if last is not None and src_offset <= last:
            return None
        sources[src_partition] = src_offset
        if type(entry) is FutureEntry:
            self.future += 1
            return _FUTURE
        event_id = entry.event_id  # type: ignore[union-attr]
        if memory is None:
            seen = self.seen
            if event_id in seen:
                self.duplicates += 1
                return _DUPLICATE
            seen[event_id] = entry.arrival_ms
        elif memory.remembers(event_id, sources, src_partition, src_offset):
            self.duplicates += 1
            return _DUPLICATE
        else:
            memory.add(event_id, entry.arrival_ms, src_partition, src_offset)
        self.accepted += 1
        etype, ts, cohort = entry.type, entry.ts_ns, entry.cohort  # type: ignore[union-attr]
        if etype == "signup":
            if _earlier(ts, cohort, self.signup_ns, self.signup_cohort):
                self.signup_ns, self.signup_cohort = ts, cohort
            return _ACCEPTED
        features = self.features
        feature = entry.feature  # type: ignore[union-attr]
        if etype == "use":
            day = ts // DAY_NS
            fs = features.get(feature)  # type: ignore[arg-type]
            if fs is None:
                fs = features[feature] = FeatureState(None, None, ts, ts, 1, [day])  # type: ignore[index]
            else:
                fs.uses += 1
                first = fs.first_use_ns
                if first is None:
                    fs.first_use_ns = fs.last_use_ns = ts
                elif ts < first:
                    fs.first_use_ns = ts
                elif ts > fs.last_use_ns:  # type: ignore[operator]
                    fs.last_use_ns = ts
                days = fs.use_days
                if not days or days[-1] != day:  # most uses fall on the latest date
                    fs.use_days = with_use_day(days, day)
            days = self.use_days
            if not days:
                self.use_days = [day]
            elif days[-1] != day:
                self.use_days = with_use_day(days, day)
            if type(entry) is TimedUseEntry:
                times = fs.task_times
                if times is None:
                    times = fs.task_times = TaskTimes()
                times.observe(entry.duration_ms)
            return _ACCEPTED
        if etype == "exposure":
            fs = features.get(feature)  # type: ignore[arg-type]
            if fs is None:
                features[feature] = FeatureState(ts, cohort)  # type: ignore[index]
            elif _earlier(ts, cohort, fs.exposure_ns, fs.exposure_cohort):
                fs.exposure_ns, fs.exposure_cohort = ts, cohort
            return _ACCEPTED
        # feedback (an AnswerEntry): about the feature, if it names one, and about anything ('*')
        scale, score = entry.scale, entry.score  # type: ignore[union-attr]
        if feature is not None:
            fs = features.get(feature)
            if fs is None:
                fs = features[feature] = FeatureState()
            add_answer(fs.answers, scale, ts, score)  # type: ignore[arg-type]
        add_answer(self.answers, scale, ts, score)  # type: ignore[arg-type]
        return _ACCEPTED

    def prune_seen(self, window_ms: int = DEDUP_WINDOW_MS) -> None:
        """Forget event ids accepted more than `window_ms` before this user's latest arrival."""
        seen = self.seen
        if len(seen) < 2:
            return
        horizon = max(seen.values()) - window_ms
        if min(seen.values()) < horizon:
            self.seen = {k: v for k, v in seen.items() if v >= horizon}

    def encode(self) -> bytes:
        """Compact, versioned serialization (changelog value and store value)."""
        return _encode(self)

    @classmethod
    def decode(cls, data: bytes) -> UserState:
        """Inverse of `encode`; also reads (and migrates) the states of version 1."""
        try:
            state = _decode_user(data)
        except msgspec.DecodeError:
            return _migrate_v1(data)
        if state.version != STATE_VERSION:
            raise ValueError(f"unknown user state version {state.version}")
        return state


def _migrate_v1(data: bytes) -> UserState:
    """A state of version 1 (positional lists, sources as pairs; wide integers as a `J` blob).

    Version 1 kept no dates of use, durations or answers (it had no v2 events). A migrated state
    knows the dates of its earliest and latest use of each feature (from their times) but not the
    dates in between: until the user's later uses fill them in, its active-days counts, and whether
    it is returning or resurrecting, see only those two dates of its history before the upgrade.
    """
    version, signup_ns, signup_cohort, accepted, duplicates, features, seen, sources, *rest = loads(data)
    if version != 1:
        raise ValueError(f"unknown user state version {version}")
    user = UserState(
        STATE_VERSION,
        signup_ns,
        signup_cohort,
        accepted,
        duplicates,
        {name: FeatureState(*fields) for name, fields in features.items()},
        seen,
        dict(sources),
        rest[0] if rest else 0,
    )
    for fs in user.features.values():
        if fs.first_use_ns is not None:
            for ts in (fs.first_use_ns, fs.last_use_ns):
                fs.use_days = with_use_day(fs.use_days, ts // DAY_NS)  # type: ignore[operator]
                user.use_days = with_use_day(user.use_days, ts // DAY_NS)  # type: ignore[operator]
    return user


class UserSummary(msgspec.Struct, array_like=True, gc=False):
    """What totals read of a stored `UserState`, decoded without its dedup map and sources.

    Deriving a partition's totals decodes every stored state: skipping the event ids (a dict of
    36-character strings per user) makes that decode about half as costly.
    """

    version: int
    signup_ns: int | None
    signup_cohort: str | None
    accepted: int
    duplicates: int
    features: dict[str, FeatureState]
    seen: msgspec.Raw
    sources: msgspec.Raw
    future: int = 0
    use_days: list[int] = []
    answers: dict[str, Answer] = {}
    dedup_depth: int = 0


_encode = msgspec.json.Encoder().encode
_decode_user = msgspec.json.Decoder(UserState).decode
_decode_summary = msgspec.json.Decoder(UserSummary).decode


def decode_summary(data: bytes) -> UserSummary | UserState:
    """Decode what `AdoptionTotals.add_user` needs of `UserState.encode`'s output."""
    try:
        summary = _decode_summary(data)
    except msgspec.DecodeError:
        summary = None
    if summary is not None and summary.version == STATE_VERSION:
        return summary
    return UserState.decode(data)  # a state of version 1 is migrated; other versions are refused


class SourceOutcomes(msgspec.Struct, array_like=True, gc=False):
    """Invalid messages of one input partition (they have no trustworthy user)."""

    last_offset: int = -1
    invalid: int = 0
    future: int = 0  # written only by versions that counted future messages per input partition

    def apply(self, entry: InvalidEntry) -> bool:
        """Count one invalid message unless it is a replay; return whether it counted."""
        if entry.src_offset <= self.last_offset:
            return False
        self.last_offset = entry.src_offset
        self.invalid += 1
        return True

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, data: bytes) -> SourceOutcomes:
        return _decode_source(data)


_decode_source = msgspec.json.Decoder(SourceOutcomes).decode
