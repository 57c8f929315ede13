"""`adoptstream-dev generate`: realistic synthetic usage events (CONTRACT sections 1 and 3.1).

`TrafficGenerator` is pure and importable (tests, the benchmark and `adoptstream-dev demo` reuse it). Each
user has a story: a signup, exposures to features (carrying the user's rollout wave or department as
cohort), a first use after a log-normal delay (minutes to days) for a per-feature fraction of them, then
repeated uses until they drift away. Feature popularity is Zipf-skewed, traffic follows a working-hours
rhythm (UTC), and the stream holds a few retried duplicates, out-of-order timestamps, all three `ts`
formats (integer ms, float ms, RFC 3339 with `Z` or an offset) and, on request, invalid lines.

Contract v2 (section 3.1): most uses carry `duration_ms`, the task's time (log-normal around the
feature's median, slower for a user's first use), and users who use a feature now and then answer a
survey (`feedback`): CSAT 1-5, CES 1-7 (7: very easy) or NPS 0-10 about the feature, or, less often,
about the product as a whole. Scores follow the feature's own satisfaction, so features differ.

`events(count)` yields exactly `count` lines spread over the past `days` ending at `now_ms`
(deterministic for a seed and `now_ms`); `live(now_ms)` continues the same stories in real time.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import heapq
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import orjson

from adoptstream.core.events import NS_PER_MS
from adoptstream.runtime.config import ConfigError, TopicSettings, add_flags, from_flags

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature: how many users see it, how many of those adopt it, and how fast."""

    name: str
    exposure: float  # probability that a user is exposed
    adoption: float  # probability that an exposed user ever uses it
    median_delay_min: float  # median time from exposure to first use
    rollout: str  # "ga" (everyone at signup), "waves" (pilot, wave-1, wave-2), "departments"
    satisfaction: float  # 0..1: where its survey answers centre (0.5: lukewarm)
    task_median_s: float  # median time a task with it takes


# Ordered by popularity: repeated uses pick a feature with Zipf weights over this order.
FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("search", 0.97, 0.80, 15, "ga", 0.78, 4),
    FeatureSpec("dashboards", 0.90, 0.62, 60, "ga", 0.70, 40),
    FeatureSpec("export.csv", 0.85, 0.48, 240, "ga", 0.62, 12),
    FeatureSpec("notifications", 0.80, 0.52, 90, "ga", 0.50, 2),
    FeatureSpec("dark-mode", 0.70, 0.40, 30, "waves", 0.86, 1),
    FeatureSpec("comments", 0.65, 0.36, 300, "ga", 0.66, 25),
    FeatureSpec("share-link", 0.60, 0.30, 600, "waves", 0.74, 6),
    FeatureSpec("ai/assist", 0.55, 0.26, 1440, "waves", 0.45, 90),
    FeatureSpec("calendar-sync", 0.45, 0.20, 720, "departments", 0.40, 30),
    FeatureSpec("bulk-edit", 0.40, 0.15, 2880, "departments", 0.58, 180),
    FeatureSpec("api-tokens", 0.30, 0.12, 4320, "departments", 0.55, 60),
    FeatureSpec("offline-mode", 0.25, 0.08, 2880, "waves", 0.35, 20),
)
# Survey answers (CONTRACT 3.1): scale -> (lowest, highest score). CES is asked as "it was easy to ...":
# 7 strongly agree (low effort), 1 strongly disagree.
SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
# Which scale an in-app survey about a feature asks, and one about the whole product (mostly NPS).
FEATURE_SCALES: tuple[tuple[str, float], ...] = (("csat", 0.45), ("ces", 0.30), ("nps", 0.25))
PRODUCT_SCALES: tuple[tuple[str, float], ...] = (("nps", 0.70), ("csat", 0.30))
PRODUCT_SATISFACTION = 0.68
PRODUCT_SURVEY_SHARE = 0.25  # of the answers: about the product, without a feature
MAX_DURATION_MS = 86_400_000
ZIPF_S = 1.1
WAVES: tuple[tuple[str, float], ...] = (("pilot", 0.05), ("wave-1", 0.35), ("wave-2", 0.60))
# when each wave's rollout starts, as a fraction of the historical window
WAVE_START: dict[str, float] = {"pilot": 0.0, "wave-1": 0.3, "wave-2": 0.65}
DEPARTMENTS: tuple[tuple[str, float], ...] = (
    ("dept-engineering", 0.30),
    ("dept-sales", 0.20),
    ("dept-support", 0.20),
    ("dept-marketing", 0.12),
    ("dept-finance", 0.10),
    ("dept-hr", 0.08),
)
DEPARTMENT_START: dict[str, float] = {"dept-engineering": 0.0, "dept-support": 0.4}  # others: 0.6
PLATFORMS: tuple[tuple[str, float, str], ...] = (
    ("web", 0.50, "4.18."),
    ("ios", 0.20, "5.12."),
    ("android", 0.20, "5.11."),
    ("desktop", 0.10, "2.3."),
)
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
OFFSETS_MIN = (60, 120, 330, 540, -300, -420, -180, 600)
_UNICODE_NAMES = ("zoë.müller", "田中.太郎", "łukasz.wójcik", "søren.ølgaard", "amélie.côté", "иван.петров")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

# kinds of scheduled story events
_EXPOSURE, _FIRST_USE = 1, 2


@dataclass(slots=True)
class _User:
    user_id: str
    wave: str
    department: str
    platform: str
    version: str
    tenant: str
    activity: int  # how many tickets in the repeated-use pool each adopted feature gets
    signup_ms: int
    mood: float  # how much kinder (or harsher) than average this user's survey answers are


def _weighted(rng: random.Random, items: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for name, weight in items:
        x -= weight
        if x < 0:
            return name
    return items[-1][0]


def format_ts(ms: int, style: str, offset_min: int = 0, frac: int = 0) -> int | float | str:
    """`ts` in one of the contract's formats: int ms, float ms, RFC 3339 with `Z` or with an offset."""
    if style == "int":
        return ms
    if style == "float":
        return ms + frac / 1000
    moment = _EPOCH + timedelta(milliseconds=ms)
    if style == "z":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    local = moment.astimezone(timezone(timedelta(minutes=offset_min)))
    return local.isoformat(timespec="milliseconds")


class TrafficGenerator:
    """Deterministic synthetic traffic: `events(count)` for history, `live(now_ms)` for real time."""

    def __init__(
        self,
        seed: int = 0,
        users: int = 10_000,
        *,
        days: float = 30,
        now_ms: int | None = None,
        duplicate_ratio: float = 0.01,
        invalid_ratio: float = 0.0,
        out_of_order_ratio: float = 0.03,
        live_signup_ratio: float = 0.01,
        feedback_ratio: float = 0.02,
        duration_ratio: float = 0.7,
    ) -> None:
        if users < 1:
            raise ValueError("users must be >= 1")
        if days <= 0:
            raise ValueError("days must be > 0")
        for name, ratio in (
            ("duplicate_ratio", duplicate_ratio),
            ("invalid_ratio", invalid_ratio),
            ("out_of_order_ratio", out_of_order_ratio),
            ("live_signup_ratio", live_signup_ratio),
            ("feedback_ratio", feedback_ratio),
            ("duration_ratio", duration_ratio),
        ):
            if not 0 <= ratio <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        self.rng = random.Random(seed)
        self.max_users = users
        self.now_ms = time.time_ns() // NS_PER_MS if now_ms is None else now_ms
        self.start_ms = self.now_ms - int(days * DAY_MS)
        self.duplicate_ratio = duplicate_ratio
        self.invalid_ratio = invalid_ratio
        self.out_of_order_ratio = out_of_order_ratio
        self.live_signup_ratio = live_signup_ratio
        self.feedback_ratio = feedback_ratio  # of the repeated uses: followed by a survey answer
        self.duration_ratio = duration_ratio  # of the uses: carry duration_ms
        self.users: list[_User] = []
        self._heap: list[tuple[int, int, int, int, int]] = []  # (due ms, seq, kind, user, feature)
        self._seq = 0
        self._horizon_ms: int | None = self.now_ms  # story events after this are dropped
        self._pool: list[tuple[int, int, int]] = []  # (user, feature, active until ms) tickets
        self._recent: list[bytes] = []  # recently emitted lines: duplicates repeat one of them
        self._recent_pos = 0
        self._zipf_cum = list(_cumulative([1 / (i + 1) ** ZIPF_S for i in range(len(FEATURES))]))
        self.emitted = 0

    # -- public API ------------------------------------------------------------------------------

    def events(self, count: int) -> Iterator[bytes]:
        """Exactly `count` JSON lines (no newline) with event times in [now - days, now]."""
        if count <= 0:
            return
        # a story (signup, ~7 exposures, ~3 first uses) is ~11 events: stories make up at most
        # ~40% of the traffic, repeated uses the rest
        remaining = self.max_users - len(self.users)
        planned = min(remaining, max(1, round(count * 0.035)))
        first = len(self.users)
        slots = _Slots(self.start_ms, self.now_ms)
        self._horizon_ms = self.now_ms
        for k in range(count):
            t = slots.time((k + self.rng.random()) / count)
            # signups arrive front-loaded (sqrt curve): stories need time to unfold
            signup_due = len(self.users) - first < planned * math.sqrt((k + 1) / count)
            yield self._next(t, signup_due)

    def live(self, now_ms: int) -> bytes:
        """One JSON line happening at wall-clock `now_ms`, continuing the stories so far."""
        self._horizon_ms = None
        signup_due = len(self.users) < self.max_users and self.rng.random() < self.live_signup_ratio
        return self._next(now_ms, signup_due)

    # -- one event -------------------------------------------------------------------------------

    def _next(self, t: int, signup_due: bool) -> bytes:
        rng = self.rng
        if self._recent and rng.random() < self.duplicate_ratio:
            line = self._recent[int(rng.random() * len(self._recent))]  # a client retry: same bytes
        elif self.invalid_ratio and rng.random() < self.invalid_ratio:
            line = self._invalid(t)
        else:
            line = self._valid(t, signup_due)
            self._remember(line)
        self.emitted += 1
        return line

    def _valid(self, t: int, signup_due: bool) -> bytes:
        if signup_due and len(self.users) < self.max_users:
            return self._signup(t)
        heap = self._heap
        if heap and heap[0][0] <= t:
            return self._story_event(heapq.heappop(heap))
        line = self._repeat_use(t)
        if line is not None:
            return line
        if heap and self._horizon_ms is not None and heap[0][0] <= self._horizon_ms:
            # history: nothing to repeat yet, so run the stories ahead
            return self._story_event(heapq.heappop(heap))
        if self.users:
            return self._organic_use(t)
        return self._signup(t)

    def _signup(self, t: int) -> bytes:
        rng = self.rng
        idx = len(self.users)
        platform = _weighted(rng, tuple((p, w) for p, w, _ in PLATFORMS))
        version = next(v for p, _, v in PLATFORMS if p == platform) + str(rng.randrange(8))
        user = _User(
            user_id=self._user_id(idx),
            wave=_weighted(rng, WAVES),
            department=_weighted(rng, DEPARTMENTS),
            platform=platform,
            version=version,
            tenant=TENANTS[min(int(rng.paretovariate(1.2)) - 1, len(TENANTS) - 1)],
            activity=min(8, int(rng.paretovariate(1.5))),
            signup_ms=t,
            mood=rng.gauss(0, 0.12),
        )
        self.users.append(user)
        for f, spec in enumerate(FEATURES):
            if rng.random() < spec.exposure:
                exposed_at = self._exposure_time(user, spec, t)
                self._schedule(exposed_at, _EXPOSURE, idx, f)
            elif rng.random() < 0.04:  # organic: found it without being shown it
                self._schedule(t + self._delay(spec.median_delay_min * 4), _FIRST_USE, idx, f)
        return self._line(user, "signup", None, t, cohort=user.department, source="accounts-svc")

    def _exposure_time(self, user: _User, spec: FeatureSpec, signup_ms: int) -> int:
        """Onboarding shows GA features at once; waves and departments wait for their rollout."""
        rng = self.rng
        soon = signup_ms + int(rng.lognormvariate(math.log(45_000), 1.2))
        if spec.rollout == "ga":
            return soon
        if spec.rollout == "waves":
            frac = WAVE_START[user.wave]
        else:
            frac = DEPARTMENT_START.get(user.department, 0.6)
        opens = self.start_ms + int(frac * (self.now_ms - self.start_ms))
        if soon >= opens:
            return soon
        return opens + int(rng.expovariate(1 / (1.5 * DAY_MS)))  # the wave reaches people over days

    def _story_event(self, item: tuple[int, int, int, int, int]) -> bytes:
        due, _, kind, idx, f = item
        user = self.users[idx]
        spec = FEATURES[f]
        if kind == _EXPOSURE:
            if self.rng.random() < spec.adoption:
                self._schedule(due + self._delay(spec.median_delay_min), _FIRST_USE, idx, f)
            cohort = self._exposure_cohort(user, spec)
            return self._line(user, "exposure", spec.name, due, cohort=cohort, source="flags-svc")
        # first use: from now on the user keeps using it for a while
        lifetime = int(self.rng.lognormvariate(math.log(12 * DAY_MS), 1.0))
        ticket = (idx, f, due + lifetime)
        self._pool.extend([ticket] * user.activity)
        return self._use(user, spec, due, first=True)

    def _exposure_cohort(self, user: _User, spec: FeatureSpec) -> str | None:
        if self.rng.random() < 0.05:
            return None  # some flag services don't say: the monitor reports `unassigned`
        return user.department if spec.rollout == "departments" else user.wave

    def _repeat_use(self, t: int) -> bytes | None:
        """A use by someone who adopted the feature and has not drifted away yet."""
        pool, rng = self._pool, self.rng
        chosen: tuple[int, int, int] | None = None
        for _ in range(16):
            if not pool:
                break
            i = int(rng.random() * len(pool))
            ticket = pool[i]
            if ticket[2] < t:  # churned: drop the ticket (swap-remove)
                pool[i] = pool[-1]
                pool.pop()
                continue
            chosen = ticket
            # popular features get used more often: accept with Zipf weight relative to the top one
            if rng.random() < (1 / (ticket[1] + 1) ** ZIPF_S) ** 0.5:
                break
        if chosen is None:
            return None
        idx, f, _ = chosen
        if rng.random() < self.feedback_ratio:  # an in-app survey after the task
            return self._feedback(self.users[idx], FEATURES[f], t)
        ts = t
        if rng.random() < self.out_of_order_ratio:  # an offline client catching up
            ts = t - int(rng.lognormvariate(math.log(20 * MINUTE_MS), 1.3))
        return self._use(self.users[idx], FEATURES[f], ts)

    def _organic_use(self, t: int) -> bytes:
        idx = self.rng.randrange(len(self.users))
        f = bisect.bisect_left(self._zipf_cum, self.rng.random() * self._zipf_cum[-1])
        self._pool.append((idx, f, t + DAY_MS))
        return self._use(self.users[idx], FEATURES[f], t, first=True)

    def _use(self, user: _User, spec: FeatureSpec, ts: int, *, first: bool = False) -> bytes:
        """A use; most clients time the task (`duration_ms`, log-normal, slower the first time)."""
        rng = self.rng
        if rng.random() >= self.duration_ratio:
            return self._line(user, "use", spec.name, ts)
        median_ms = spec.task_median_s * 1000 * (1.8 if first else 1.0)
        duration = min(MAX_DURATION_MS, int(rng.lognormvariate(math.log(median_ms), 0.9)))
        return self._line(user, "use", spec.name, ts, fields={"duration_ms": duration})

    def _feedback(self, user: _User, spec: FeatureSpec, ts: int) -> bytes:
        """One survey answer about `spec`, or (now and then) about the product as a whole."""
        rng = self.rng
        if rng.random() < PRODUCT_SURVEY_SHARE:
            feature, scale, centre = None, _weighted(rng, PRODUCT_SCALES), PRODUCT_SATISFACTION
        else:
            feature, scale, centre = spec.name, _weighted(rng, FEATURE_SCALES), spec.satisfaction
        low, high = SCALES[scale]
        latent = min(1.0, max(0.0, centre + user.mood + rng.gauss(0, 0.16)))
        score = low + round(latent * (high - low))
        return self._line(user, "feedback", feature, ts, fields={"scale": scale, "score": score})

    # -- helpers ---------------------------------------------------------------------------------

    def _schedule(self, due: int, kind: int, idx: int, f: int) -> None:
        """Queue a story event; those after the end of the history wait for `live()`."""
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, kind, idx, f))

    def _delay(self, median_min: float) -> int:
        """Log-normal delay around a median: minutes to days."""
        return int(self.rng.lognormvariate(math.log(median_min * MINUTE_MS), 1.4))

    def _user_id(self, idx: int) -> str:
        rng = self.rng
        tag = "".join(rng.choice(_ALNUM) for _ in range(6))
        x = rng.random()
        if x < 0.8:
            return f"usr_{tag}{idx:05x}"
        if x < 0.95:
            return f"user{idx}.{tag}@{TENANTS[idx % len(TENANTS)]}.example"
        return f"{_UNICODE_NAMES[idx % len(_UNICODE_NAMES)]}.{idx}@{TENANTS[idx % len(TENANTS)]}.example"

    def _event_id(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def _ts(self, user: _User, source: str | None, ms: int) -> int | float | str:
        """Each client library writes time its own way."""
        rng = self.rng
        if self._horizon_ms is not None:
            ms = min(ms, self._horizon_ms)
        x = rng.random()
        if source is not None:  # back-end services: RFC 3339, some with a local offset
            style = "offset" if x < 0.4 else "z"
        elif user.platform == "ios":
            style = "z" if x < 0.85 else "int"
        elif user.platform == "android":
            style = "float" if x < 0.6 else "int"
        else:
            style = "int" if x < 0.9 else "float"
        if style == "int":
            return ms
        if style == "float":
            return format_ts(ms, style, frac=int(rng.random() * 1000))
        return format_ts(ms, style, OFFSETS_MIN[int(rng.random() * len(OFFSETS_MIN))])

    def _line(
        self,
        user: _User,
        etype: str,
        feature: str | None,
        ms: int,
        *,
        cohort: str | None = None,
        source: str | None = None,
        fields: dict[str, object] | None = None,
    ) -> bytes:
        event: dict[str, object] = {
            "event_id": self._event_id(),
            "user_id": user.user_id,
            "type": etype,
        }
        if feature is not None:
            event["feature"] = feature
        event["ts"] = self._ts(user, source, ms)
        if fields:
            event.update(fields)
        if cohort is not None:
            event["cohort"] = cohort
        event["tenant"] = user.tenant
        if source is not None:
            event["source"] = source
        else:
            event["client"] = {"platform": user.platform, "version": user.version}
            event["session_id"] = f"s-{self.rng.getrandbits(48):012x}"
        return orjson.dumps(event)

    def _remember(self, line: bytes) -> None:
        if len(self._recent) < 512:
            self._recent.append(line)
        else:
            self._recent[self._recent_pos] = line
            self._recent_pos = (self._recent_pos + 1) % 512

    def _invalid(self, t: int) -> bytes:
        """A line breaking one contract rule, the kind of mistake real clients make."""
        rng = self.rng
        uid = f"usr_bad{rng.randrange(10_000)}"
        base = {"event_id": self._event_id(), "user_id": uid, "type": "use", "feature": "search", "ts": t}
        kind = rng.randrange(10)
        if kind == 0:
            return orjson.dumps(base)[: rng.randrange(10, 60)]  # truncated
        if kind == 1:
            del base["user_id"]
        elif kind == 2:
            base["type"] = "click"
        elif kind == 3:
            base["feature"] = "Export CSV"
        elif kind == 4:
            base["ts"] = (_EPOCH + timedelta(milliseconds=t)).strftime("%Y-%m-%dT%H:%M:%S")  # no offset
        elif kind == 5:
            return orjson.dumps(base)[:-1] + b', "score": NaN}'
        elif kind == 6:
            base["event_id"] = ""
        elif kind == 7:
            base["cohort"] = "x" * 65
        elif kind == 8:
            return b'["not", "an", "object"]'
        else:
            del base["ts"]
        return orjson.dumps(base)


def _cumulative(weights: list[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def hour_weight(hour_start_ms: int) -> float:
    """Relative traffic of one UTC hour: busy in working hours, quieter at night and weekends."""
    hour = hour_start_ms // HOUR_MS % 24
    weekday = (hour_start_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Sat, Sun
    weight = 0.12 + math.exp(-(((hour + 0.5 - 13) / 3.5) ** 2))
    return weight * (0.35 if weekday >= 5 else 1.0)


class _Slots:
    """Maps a fraction of the traffic to a time in [start, end] following the daily rhythm."""

    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.bounds: list[int] = []
        self.cum: list[float] = []
        total = 0.0
        t = start_ms
        while t < end_ms:
            nxt = min((t // HOUR_MS + 1) * HOUR_MS, end_ms)
            # the story gets busier over time: a growing product
            growth = 0.6 + 0.4 * (t - start_ms) / max(1, end_ms - start_ms)
            total += hour_weight(t) * growth * (nxt - t) / HOUR_MS
            self.bounds.append(t)
            self.cum.append(total)
            t = nxt
        self.bounds.append(end_ms)
        self.end_ms = end_ms

    def time(self, fraction: float) -> int:
        if not self.cum:
            return self.end_ms
        target = min(max(fraction, 0.0), 1.0) * self.cum[-1]
        i = min(bisect.bisect_left(self.cum, target), len(self.cum) - 1)
        lo = self.cum[i - 1] if i else 0.0
        part = (target - lo) / (self.cum[i] - lo) if self.cum[i] > lo else 0.0
        start, end = self.bounds[i], self.bounds[i + 1]
        return min(start + int(part * (end - start)), self.end_ms)


# -- CLI -------------------------------------------------------------------------------------------


def _parse_now(text: str) -> int:
    """`--now`: epoch milliseconds or RFC 3339 with offset."""
    if text.lstrip("-").isdigit():
        return int(text)
    from adoptstream.core.events import InvalidEvent, parse_ts_ns

    try:
        return parse_ts_ns(text) // NS_PER_MS
    except InvalidEvent as exc:
        raise argparse.ArgumentTypeError(f"--now {text!r}: {exc.reason}") from None


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="synthetic usage events: --count N lines to a file, or --rate R events/s to Kafka",
        description="Realistic synthetic adoption traffic. --count N writes N JSON lines (deterministic "
        "with --seed and --now); --rate R publishes R events/s with current timestamps until Ctrl-C.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--count", type=int, metavar="N", help="write N JSON lines and exit")
    mode.add_argument("--rate", type=float, metavar="R", help="publish R events per second to --topic")
    p.add_argument("-o", "--output", metavar="FILE", help="with --count: write here instead of stdout")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--users", type=int, default=10_000, help="user population (default 10000)")
    p.add_argument("--days", type=float, default=30, help="with --count: history length (default 30)")
    p.add_argument("--now", type=_parse_now, default=None, help="end of history (ms or RFC 3339)")
    p.add_argument("--duplicate-ratio", type=_ratio, default=0.01, help="retried duplicates (0.01)")
    p.add_argument("--invalid-ratio", type=_ratio, default=0.0, help="contract-breaking lines (0)")
    p.add_argument("--out-of-order-ratio", type=_ratio, default=0.03, help="late uses (0.03)")
    p.add_argument(
        "--feedback-ratio", type=_ratio, default=0.02, help="repeated uses answered by a survey (0.02)"
    )
    p.add_argument("--duration-ratio", type=_ratio, default=0.7, help="uses carrying duration_ms (0.7)")
    add_flags(p, TopicSettings)  # with --rate: where to
    p.add_argument("--backfill", type=int, default=0, help="with --rate: first publish N historical events")
    p.add_argument("--duration", type=float, default=None, help="with --rate: stop after S seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    try:
        gen = TrafficGenerator(
            seed,
            args.users,
            days=args.days,
            now_ms=args.now,
            duplicate_ratio=args.duplicate_ratio,
            invalid_ratio=args.invalid_ratio,
            out_of_order_ratio=args.out_of_order_ratio,
            feedback_ratio=args.feedback_ratio,
            duration_ratio=args.duration_ratio,
        )
    except ValueError as exc:
        print(f"adoptstream-dev generate: {exc}", file=sys.stderr)
        return 2
    if args.count is not None:
        if args.count < 0:
            print("adoptstream-dev generate: --count must be >= 0", file=sys.stderr)
            return 2
        return _write(gen, args.count, args.output)
    if args.rate <= 0:
        print("adoptstream-dev generate: --rate must be > 0", file=sys.stderr)
        return 2
    try:
        settings = from_flags(TopicSettings, args)
    except ConfigError as exc:
        print(f"adoptstream-dev generate: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_live_cli(gen, settings, args.rate, args.backfill, args.duration))


def _write(gen: TrafficGenerator, count: int, output: str | None) -> int:
    out = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
    try:
        chunk: list[bytes] = []
        for line in gen.events(count):
            chunk.append(line)
            if len(chunk) >= 4096:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
        out.flush()
    finally:
        if output:
            out.close()
    if output:
        print(f"generate: wrote {count:,} events to {output}", file=sys.stderr)
    return 0


async def run_live(
    gen: TrafficGenerator,
    publisher: object,
    rate: float,
    stop: asyncio.Event,
    tick_s: float = 0.05,
) -> None:
    """Publish `rate` events/s of `gen.live()` through a started `Publisher` until `stop` is set."""
    from adoptstream.publish import Publisher

    assert isinstance(publisher, Publisher)
    started = time.monotonic()
    produced = 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        now_ms = time.time_ns() // NS_PER_MS
        while produced < due:
            publisher.add(gen.live(now_ms))
            produced += 1
        await publisher.send_pending()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)


async def _live_cli(
    gen: TrafficGenerator,
    settings: TopicSettings,
    rate: float,
    backfill: int,
    duration: float | None,
) -> int:
    from adoptstream.publish import Publisher, PublishError

    topic = settings.topic
    publisher = Publisher(settings, topic)
    try:
        await publisher.start()
    except (ConfigError, PublishError) as exc:
        print(f"adoptstream-dev generate: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    tty = sys.stderr.isatty()
    try:
        if backfill > 0:
            for line in gen.events(backfill):
                publisher.add(line)
                if publisher.pending_batches():
                    await publisher.send_pending()
            await publisher.flush()
            print(f"generate: backfilled {backfill:,} historical events", file=sys.stderr)
        task = asyncio.create_task(run_live(gen, publisher, rate, stop))
        last_print = time.monotonic()
        while not task.done():
            await asyncio.wait([task], timeout=1.0)
            stats = publisher.stats
            line = f"generate: {stats.sent:,} acked, {stats.send_failed:,} failed ({rate:g}/s -> {topic})"
            if tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
            elif time.monotonic() - last_print >= 10:
                print(line, file=sys.stderr, flush=True)
                last_print = time.monotonic()
        task.result()
        await publisher.flush()
    finally:
        await publisher.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    stats = publisher.stats
    if tty:
        print(file=sys.stderr)
    print(f"generate: stopped; {stats.sent:,} events acked, {stats.send_failed:,} failed", file=sys.stderr)
    return 1 if stats.send_failed else 0
