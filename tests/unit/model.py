"""An independent, deliberately naive reference model of CONTRACT.md (sections 1, 2 and 3).

Nothing here imports adoptstream: the model parses every message itself (stdlib `json`, its own
RFC 3339 parser, its own feature-name check) and computes every contract series by brute force over
the full list of accepted events at the scrape time T, without per-user state, hour buckets, date
sets or incremental updates (events are only grouped by user).

Choices the contract leaves open and the model makes the same way as the implementation (each one
is marked "IMPLEMENTATION CHOICE" below):

* ties on `ts` between two earliest exposures (or signups) with different cohorts go to the
  smallest cohort string (code point order), an absent cohort sorting after every named cohort;
* a float `ts` is converted from the exact decimal value of its JSON text, rounded half-even to
  whole nanoseconds (only sub-nanosecond fractions are affected); an RFC 3339 fraction beyond nine
  digits is truncated;
* `printable` is Python's definition (`str.isprintable`, restated below from Unicode categories);
* which series are present where the contract does not say: the TTFU histogram and
  `feature_uses_total` have a series for `*` and for every feature seen in any accepted event (0
  when empty), `exposed_users`/`adopted_users` only for (feature, cohort) pairs with >= 1 exposed
  user, `adoptstream_label_overflow_values` for `feature`, `cohort` and `feature_cohort` (0 without caps).

Section 3 (v2), for the implementation to make the same way:

* `"feature": null` on a feedback is an answer without a feature, as `"cohort": null` is an absent
  cohort (section 1); on `exposure` and `use` a null feature stays invalid (the field is required);
* a JSON integer is a number token without fraction or exponent part, so `-0` is the integer 0: a
  valid `score` of the nps scale and a valid `duration_ms` of 0 (`-0` on csat/ces is out of range);
* `duration_ms` with the value null on a use is invalid ("any other value"), unlike a null cohort;
  on every other type the field is ignored whatever its value, as `scale` and `score` are on every
  type but feedback, and `feature` on a signup;
* a feature is "seen in any accepted event" (the presence rule of sections 2 and 3) when any
  accepted exposure, use or feedback names it: a feature named only by answers has its
  active-users, feature-uses, TTFU, active-days, lifecycle and task-duration series, all 0;
* `adoptstream_task_duration_seconds` is present like the TTFU histogram: for `*` and every feature
  seen in any accepted event, empty (all 0) when no use of it carries `duration_ms`;
* `_sum` of the task-duration histogram is the exact sum of duration_ms / 1000, rounded once to a
  double.

No label caps: `expected_samples` is what a worker exports when no cap is reached (the overflow
gauges are 0).

Known limits (kept out of the generated inputs, covered by targeted tests instead): the model
uses Python's recursive `json` (deeply nested ignored fields) and exact big integers / decimals
(the implementation reads JSON numbers as 64-bit integers or doubles); a key repeated in one JSON
object keeps its last value.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

MAX_BYTES = 65_536
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
HOUR_NS = 3_600 * NS_PER_S
DAY_NS = 24 * HOUR_NS
FUTURE_NS = 5 * 60 * NS_PER_S
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
BUCKETS_S = (60, 300, 900, 3600, 14400, 86400, 259200, 604800, 2592000)
FEATURE_FIRST = set("abcdefghijklmnopqrstuvwxyz0123456789")
FEATURE_REST = FEATURE_FIRST | set("_.:/-")
UNASSIGNED = "unassigned"
ANY = "*"
TYPES = ("signup", "exposure", "use", "feedback")
SCALES = {"nps": range(0, 11), "csat": range(1, 6), "ces": range(1, 8)}  # the scores of each scale
MAX_DURATION_MS = 86_400_000
DURATION_BUCKETS_MS = (500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 900_000, 3_600_000)
LIFECYCLE_PERIODS = {"1d": 1, "7d": 7, "30d": 30}
ACTIVE_DAYS_PERIODS = {"7d": 7, "30d": 30}
SIGNUP_PERIODS = {"1d": 1, "7d": 7, "30d": 30}
FEEDBACK_PERIODS = {"30d": 30, "90d": 90}
LIFECYCLE_STATES = ("new", "returning", "resurrecting", "dormant")

ACCEPTED, DUPLICATE, INVALID, FUTURE = "accepted", "duplicate", "invalid", "future"
OUTCOMES = (ACCEPTED, DUPLICATE, INVALID, FUTURE)

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
V2_FAMILIES = (  # the metric families section 3 adds
    "adoptstream_active_days_users",
    "adoptstream_lifecycle_users",
    "adoptstream_signed_up_users",
    "adoptstream_feedback_users",
    "adoptstream_task_duration_seconds",
)


@dataclass(frozen=True)
class MEvent:
    event_id: str
    user_id: str
    type: str
    feature: str | None
    ts_ns: int
    cohort: str | None
    scale: str | None = None  # feedback only
    score: int | None = None  # feedback only
    duration_ms: int | None = None  # use only, when it carries one


class _Invalid(Exception):
    pass


# -- section 1: parsing -----------------------------------------------------------------------------


def _no_constants(name: str) -> object:
    raise _Invalid(f"non-finite constant {name}")


def _check_strings(value: object) -> None:
    """Reject lone surrogates anywhere (stdlib json lets "\\ud800" through)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
                raise _Invalid("lone surrogate")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _printable(text: str) -> bool:
    for c in text:
        if c == " ":
            continue
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"):
            return False
    return True


def _is_feature(name: object) -> bool:
    if type(name) is not str or not 1 <= len(name) <= 128:
        return False
    return name[0] in FEATURE_FIRST and all(c in FEATURE_REST for c in name[1:])


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.](\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 date-time (the subset the generators write) as integer ns since the epoch."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise _Invalid("not RFC 3339 with offset")
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    if y < 1 or not 1 <= mo <= 12 or not 1 <= d <= _days_in_month(y, mo):
        raise _Invalid("bad date")
    if hh > 23 or mi > 59 or ss > 59:  # no leap seconds (the implementation rejects them too)
        raise _Invalid("bad time")
    frac = (m.group(7) or "")[:9].ljust(9, "0")  # IMPLEMENTATION CHOICE: truncate beyond ns
    offset_s = 0
    if m.group(8) is None:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise _Invalid("bad offset")
        offset_s = (oh * 3600 + om * 60) * (1 if m.group(9) == "+" else -1)
    local_s = _days_from_civil(y, mo, d) * 86_400 + hh * 3600 + mi * 60 + ss
    return (local_s - offset_s) * NS_PER_S + int(frac)


def _ts_ns(ts: object) -> int:
    if type(ts) is int:
        return ts * NS_PER_MS
    if type(ts) is Decimal:
        # IMPLEMENTATION CHOICE: exact decimal value, half-even to whole ns
        return round(Fraction(ts) * NS_PER_MS)  # round() of a Fraction is half-even
    if type(ts) is str:
        return parse_rfc3339_ns(ts)
    raise _Invalid("ts type")


def _is_json_integer(value: object) -> bool:
    """A JSON number token without fraction or exponent part.

    `_parse` reads numbers with `parse_float=Decimal`: every token with a fraction or an exponent
    (`5.0`, `5e0`, `5E+0`) arrives as a Decimal, every other one (`5`, `-0`) as an int; booleans
    are bool, which `type(...) is int` rejects. IMPLEMENTATION CHOICE: `-0` is the integer 0.
    """
    return type(value) is int


def _str_field(obj: dict, name: str, max_len: int) -> str:
    v = obj.get(name)
    if type(v) is not str or len(v) < 1 or len(v) > max_len:
        raise _Invalid(name)
    return v


def parse(raw: bytes | None) -> MEvent | None:
    """The event of one message value, or None when the message is invalid."""
    try:
        return _parse(raw)
    except _Invalid:
        return None


def _parse(raw: bytes | None) -> MEvent:
    if raw is None or len(raw) > MAX_BYTES:
        raise _Invalid("size")
    try:
        text = raw.decode("utf-8")  # strict: no lone surrogates encoded as bytes, no junk bytes
    except UnicodeDecodeError:
        raise _Invalid("utf-8") from None
    try:
        obj = json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
    except ValueError:  # JSONDecodeError (incl. BOM, trailing garbage) and the like
        raise _Invalid("json") from None
    _check_strings(obj)
    if not isinstance(obj, dict):
        raise _Invalid("not an object")
    event_id = _str_field(obj, "event_id", 128)
    user_id = _str_field(obj, "user_id", 256)
    etype = obj.get("type")
    if type(etype) is not str or etype not in TYPES:
        raise _Invalid("type")
    feature = None
    if etype in ("exposure", "use"):
        feature = obj.get("feature")
        if not _is_feature(feature):
            raise _Invalid("feature")
    elif etype == "feedback":
        # IMPLEMENTATION CHOICE: "feature": null is an answer about the product as a whole (absent)
        feature = obj.get("feature")
        if feature is not None and not _is_feature(feature):
            raise _Invalid("feature")
    scale = score = duration_ms = None
    if etype == "feedback":
        scale = obj.get("scale")
        if type(scale) is not str or scale not in SCALES:
            raise _Invalid("scale")
        score = obj.get("score")
        if not _is_json_integer(score) or score not in SCALES[scale]:
            raise _Invalid("score")
    if etype == "use" and "duration_ms" in obj:  # other types ignore it, whatever its value
        duration_ms = obj["duration_ms"]  # IMPLEMENTATION CHOICE: null too is "any other value"
        if not _is_json_integer(duration_ms) or not 0 <= duration_ms <= MAX_DURATION_MS:
            raise _Invalid("duration_ms")
    if "ts" not in obj:
        raise _Invalid("ts missing")
    ts_ns = _ts_ns(obj["ts"])
    cohort = obj.get("cohort")
    if cohort is not None and (
        type(cohort) is not str or not 1 <= len(cohort) <= 64 or not _printable(cohort)
    ):
        raise _Invalid("cohort")
    return MEvent(event_id, user_id, etype, feature, ts_ns, cohort, scale, score, duration_ms)


# -- outcomes ---------------------------------------------------------------------------------------


def classify(arrivals: Sequence[tuple[int, bytes | None]], now_ns: int) -> list[tuple[str, MEvent | None]]:
    """Outcome (and parsed event) of every arrival, in arrival-index order.

    Precedence follows the contract's list: invalid, then future, then duplicate (the same
    (user_id, event_id) was accepted earlier; all arrivals are assumed to be within 24 h), then
    accepted.
    """
    out: list[tuple[str, MEvent | None]] = []
    accepted_ids: set[tuple[str, str]] = set()
    for _, raw in sorted(arrivals, key=lambda a: a[0]):
        ev = parse(raw)
        if ev is None:
            out.append((INVALID, None))
        elif ev.ts_ns > now_ns + FUTURE_NS:
            out.append((FUTURE, ev))
        elif (ev.user_id, ev.event_id) in accepted_ids:
            out.append((DUPLICATE, ev))
        else:
            accepted_ids.add((ev.user_id, ev.event_id))
            out.append((ACCEPTED, ev))
    return out


# -- section 2: metrics -----------------------------------------------------------------------------


def _earliest_cohort(events: Iterable[MEvent]) -> str:
    """Cohort label of the earliest event by ts.

    IMPLEMENTATION CHOICE (the contract says nothing about ties on ts): among events sharing the
    earliest ts, the smallest cohort string wins and an absent cohort sorts after every named one.
    """
    evs = list(events)
    first = min(e.ts_ns for e in evs)
    tied = [e.cohort for e in evs if e.ts_ns == first]
    named = sorted(c for c in tied if c is not None)
    return named[0] if named else UNASSIGNED


def _key(name: str, **labels: str) -> SampleKey:
    return name, tuple(sorted(labels.items()))


def le_label(bound_s: float | Fraction | None) -> str:
    """The `le` label of a bucket bound in seconds, as prometheus_client writes it (60 -> "60.0")."""
    return "+Inf" if bound_s is None else repr(float(bound_s))


def _histogram(
    samples: dict[SampleKey, float],
    name: str,
    feature: str,
    bounds: Sequence[Fraction],
    values: Sequence[Fraction],
) -> None:
    """`_bucket` (cumulative, `le` inclusive, +Inf), `_count` and `_sum` of one histogram series."""
    for b in bounds:
        n = sum(1 for v in values if v <= b)
        samples[_key(f"{name}_bucket", feature=feature, le=le_label(b))] = n
    samples[_key(f"{name}_bucket", feature=feature, le="+Inf")] = len(values)
    samples[_key(f"{name}_count", feature=feature)] = len(values)
    samples[_key(f"{name}_sum", feature=feature)] = float(sum(values, Fraction(0)))  # exact, rounded once


def expected_samples(
    arrivals: Sequence[tuple[int, bytes | None]], now_ns: int, scrape_ns: int
) -> dict[SampleKey, float]:
    """Every contract sample (Prometheus sample name + labels -> value), no label caps.

    `now_ns` is the monitor's clock when the messages were classified (future rule), `scrape_ns`
    the reference time T of the scrape.
    """
    results = classify(arrivals, now_ns)
    samples: dict[SampleKey, float] = {}
    for outcome in OUTCOMES:
        samples[_key("adoptstream_events_total", outcome=outcome)] = sum(
            1 for o, _ in results if o == outcome
        )
    acc = [e for o, e in results if o == ACCEPTED and e is not None]
    # IMPLEMENTATION CHOICE: a feedback's feature is "seen in any accepted event" too
    features = sorted({e.feature for e in acc if e.feature is not None})
    by_user: dict[str, list[MEvent]] = {}
    for e in acc:
        by_user.setdefault(e.user_id, []).append(e)
    _section_2(samples, acc, features, by_user, scrape_ns)
    _section_3(samples, acc, features, by_user, scrape_ns)
    samples[_key("adoptstream_label_overflow_values", label="feature")] = 0
    samples[_key("adoptstream_label_overflow_values", label="cohort")] = 0
    samples[_key("adoptstream_label_overflow_values", label="feature_cohort")] = 0
    return samples


def _about(e: MEvent, feature: str) -> bool:
    """Does the event count for `feature` (`*`: any feature, or none)?"""
    return feature == ANY or e.feature == feature


def _section_2(
    samples: dict[SampleKey, float],
    acc: list[MEvent],
    features: list[str],
    by_user: dict[str, list[MEvent]],
    scrape_ns: int,
) -> None:
    uses = [e for e in acc if e.type == "use"]
    hour_start = scrape_ns - scrape_ns % HOUR_NS  # H
    for f in [ANY, *features]:
        for window, days in WINDOWS.items():
            start = hour_start - (24 * days - 1) * HOUR_NS
            users = {e.user_id for e in uses if _about(e, f) and e.ts_ns >= start}
            samples[_key("adoptstream_active_users", feature=f, window=window)] = len(users)

    # exposed / adopted / ttfu: per (feature, user) by brute force
    ttfu: dict[str, list[Fraction]] = {f: [] for f in [ANY, *features]}
    exposed: dict[tuple[str, str], int] = {}
    adopted: dict[tuple[str, str], int] = {}
    for f in [ANY, *features]:
        for u in sorted(by_user):
            mine = by_user[u]
            if f == ANY:
                starts = [e for e in mine if e.type == "signup"]
            else:
                starts = [e for e in mine if e.type == "exposure" and e.feature == f]
            used = [e for e in mine if e.type == "use" and _about(e, f)]
            if not starts:
                continue
            key = (f, _earliest_cohort(starts))
            exposed[key] = exposed.get(key, 0) + 1
            if used:
                adopted[key] = adopted.get(key, 0) + 1
                first_use = min(e.ts_ns for e in used)
                ttfu[f].append(Fraction(max(0, first_use - min(e.ts_ns for e in starts)), NS_PER_S))
    for (f, c), n in exposed.items():
        samples[_key("adoptstream_exposed_users", feature=f, cohort=c)] = n
        samples[_key("adoptstream_adopted_users", feature=f, cohort=c)] = adopted.get((f, c), 0)

    for f, values in ttfu.items():
        _histogram(
            samples, "adoptstream_time_to_first_use_seconds", f, [Fraction(b) for b in BUCKETS_S], values
        )

    for f in [ANY, *features]:
        samples[_key("adoptstream_feature_uses_total", feature=f)] = sum(1 for e in uses if _about(e, f))


# -- section 3: calendar periods and v2 metrics -----------------------------------------------------


def date_of(ts_ns: int, today: int) -> int:
    """The UTC date of an event (days since 1970-01-01); one dated after D counts as dated D."""
    return min(ts_ns // DAY_NS, today)


def current_period(today: int, n: int) -> range:
    """C of period `Nd`: the dates D - N + 1 ... D."""
    return range(today - n + 1, today + 1)


def previous_period(today: int, n: int) -> range:
    """P of period `Nd`: the dates D - 2N + 1 ... D - N."""
    return range(today - 2 * n + 1, today - n + 1)


def _latest_score(answers: list[MEvent]) -> MEvent:
    """The latest answer by ts; of several sharing that ts, the one with the lower score."""
    latest = max(e.ts_ns for e in answers)
    return min((e for e in answers if e.ts_ns == latest), key=lambda e: e.score)


def _section_3(
    samples: dict[SampleKey, float],
    acc: list[MEvent],
    features: list[str],
    by_user: dict[str, list[MEvent]],
    scrape_ns: int,
) -> None:
    today = scrape_ns // DAY_NS  # D
    users = sorted(by_user)

    for f in [ANY, *features]:
        # the dates of each user's accepted uses of the feature (any feature for `*`)
        use_dates = {
            u: {date_of(e.ts_ns, today) for e in by_user[u] if e.type == "use" and _about(e, f)}
            for u in users
        }
        for period, n in ACTIVE_DAYS_PERIODS.items():
            c = current_period(today, n)
            for days in range(1, n + 1):
                count = sum(1 for u in users if len([d for d in use_dates[u] if d in c]) == days)
                labels = {"feature": f, "period": period, "days": str(days)}
                samples[_key("adoptstream_active_days_users", **labels)] = count
        for period, n in LIFECYCLE_PERIODS.items():
            c, p = current_period(today, n), previous_period(today, n)
            states = dict.fromkeys(LIFECYCLE_STATES, 0)
            for u in users:
                dates = use_dates[u]
                if not dates:
                    continue
                in_c = any(d in c for d in dates)
                in_p = any(d in p for d in dates)
                before_p = any(d < p.start for d in dates)
                earliest_in_c = min(dates) in c  # the date of the earliest use (dates follow ts)
                states["new"] += in_c and earliest_in_c
                states["returning"] += in_c and in_p
                states["resurrecting"] += in_c and not in_p and before_p
                states["dormant"] += in_p and not in_c
            for state, count in states.items():
                samples[_key("adoptstream_lifecycle_users", feature=f, period=period, state=state)] = count

    for period, n in SIGNUP_PERIODS.items():
        c = current_period(today, n)
        count = 0
        for u in users:
            signups = [e.ts_ns for e in by_user[u] if e.type == "signup"]
            count += bool(signups) and date_of(min(signups), today) in c
        samples[_key("adoptstream_signed_up_users", period=period)] = count

    # (feature, scale) of every accepted answer about a feature, and (`*`, scale) of every scale
    pairs = {(e.feature, e.scale) for e in acc if e.type == "feedback" and e.feature is not None}
    pairs |= {(ANY, scale) for scale in SCALES}
    for f, scale in sorted(pairs):
        for period, n in FEEDBACK_PERIODS.items():
            c = current_period(today, n)
            scores = dict.fromkeys(SCALES[scale], 0)
            for u in users:
                mine = [e for e in by_user[u] if e.type == "feedback" and e.scale == scale and _about(e, f)]
                if not mine:
                    continue
                latest = _latest_score(mine)
                if date_of(latest.ts_ns, today) in c:
                    scores[latest.score] += 1
            for score, count in scores.items():
                labels = {"feature": f, "scale": scale, "period": period, "score": str(score)}
                samples[_key("adoptstream_feedback_users", **labels)] = count

    # IMPLEMENTATION CHOICE: present like the TTFU histogram, for `*` and every feature seen
    bounds = [Fraction(b, 1000) for b in DURATION_BUCKETS_MS]
    for f in [ANY, *features]:
        durations = [
            Fraction(e.duration_ms, 1000)
            for e in acc
            if e.type == "use" and e.duration_ms is not None and _about(e, f)
        ]
        _histogram(samples, "adoptstream_task_duration_seconds", f, bounds, durations)


def v1_series(samples: dict[SampleKey, float]) -> dict[SampleKey, float]:
    """The samples of the section 2 families only (what a v1 worker exports)."""
    return {k: v for k, v in samples.items() if not k[0].startswith(V2_FAMILIES)}
