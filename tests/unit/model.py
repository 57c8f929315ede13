"""An independent, deliberately naive reference model of CONTRACT.md (sections 1 and 2).

Nothing here imports adoptstream: the model parses every message itself (stdlib `json`, its own
RFC 3339 parser, its own feature-name check) and computes every contract series by brute force over
the full list of accepted events, without per-user state, hour buckets or incremental updates.

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

Known limits (kept out of the generated inputs, covered by targeted tests instead): the model
uses Python's recursive `json` (deeply nested ignored fields) and exact big integers / decimals
(the implementation reads JSON numbers as 64-bit integers or doubles).
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
FUTURE_NS = 5 * 60 * NS_PER_S
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
BUCKETS_S = (60, 300, 900, 3600, 14400, 86400, 259200, 604800, 2592000)
FEATURE_FIRST = set("abcdefghijklmnopqrstuvwxyz0123456789")
FEATURE_REST = FEATURE_FIRST | set("_.:/-")
UNASSIGNED = "unassigned"
ANY = "*"

ACCEPTED, DUPLICATE, INVALID, FUTURE = "accepted", "duplicate", "invalid", "future"
OUTCOMES = (ACCEPTED, DUPLICATE, INVALID, FUTURE)

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class MEvent:
    event_id: str
    user_id: str
    type: str
    feature: str | None
    ts_ns: int
    cohort: str | None


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
    if etype not in ("signup", "exposure", "use") or type(etype) is not str:
        raise _Invalid("type")
    feature = None
    if etype != "signup":
        feature = obj.get("feature")
        if not _is_feature(feature):
            raise _Invalid("feature")
    if "ts" not in obj:
        raise _Invalid("ts missing")
    ts_ns = _ts_ns(obj["ts"])
    cohort = obj.get("cohort")
    if cohort is not None and (
        type(cohort) is not str or not 1 <= len(cohort) <= 64 or not _printable(cohort)
    ):
        raise _Invalid("cohort")
    return MEvent(event_id, user_id, etype, feature, ts_ns, cohort)


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


def le_label(bound_s: int | None) -> str:
    return "+Inf" if bound_s is None else repr(float(bound_s))


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
    acc = [e for o, e in results if o == ACCEPTED]
    assert all(e is not None for e in acc)
    uses = [e for e in acc if e.type == "use"]
    exposures = [e for e in acc if e.type == "exposure"]
    signups = [e for e in acc if e.type == "signup"]
    features = sorted({e.feature for e in acc if e.feature is not None})

    hour_start = scrape_ns - scrape_ns % HOUR_NS  # H
    for f in [ANY, *features]:
        for window, days in WINDOWS.items():
            start = hour_start - (24 * days - 1) * HOUR_NS
            users = {e.user_id for e in uses if (f == ANY or e.feature == f) and e.ts_ns >= start}
            samples[_key("adoptstream_active_users", feature=f, window=window)] = len(users)

    # exposed / adopted / ttfu: per (feature, user) by brute force
    ttfu: dict[str, list[int]] = {f: [] for f in [ANY, *features]}
    exposed: dict[tuple[str, str], int] = {}
    adopted: dict[tuple[str, str], int] = {}
    users = sorted({e.user_id for e in acc})
    for f in [ANY, *features]:
        for u in users:
            if f == ANY:
                starts = [e for e in signups if e.user_id == u]
                used = [e for e in uses if e.user_id == u]
            else:
                starts = [e for e in exposures if e.user_id == u and e.feature == f]
                used = [e for e in uses if e.user_id == u and e.feature == f]
            if not starts:
                continue
            key = (f, _earliest_cohort(starts))
            exposed[key] = exposed.get(key, 0) + 1
            if used:
                adopted[key] = adopted.get(key, 0) + 1
                ttfu[f].append(max(0, min(e.ts_ns for e in used) - min(e.ts_ns for e in starts)))
    for (f, c), n in exposed.items():
        samples[_key("adoptstream_exposed_users", feature=f, cohort=c)] = n
        samples[_key("adoptstream_adopted_users", feature=f, cohort=c)] = adopted.get((f, c), 0)

    for f, values in ttfu.items():
        for b in BUCKETS_S:
            n = sum(1 for v in values if v <= b * NS_PER_S)  # le is inclusive
            samples[_key("adoptstream_time_to_first_use_seconds_bucket", feature=f, le=le_label(b))] = n
        samples[_key("adoptstream_time_to_first_use_seconds_bucket", feature=f, le="+Inf")] = len(values)
        samples[_key("adoptstream_time_to_first_use_seconds_count", feature=f)] = len(values)
        samples[_key("adoptstream_time_to_first_use_seconds_sum", feature=f)] = float(
            Fraction(sum(values), NS_PER_S)
        )

    samples[_key("adoptstream_feature_uses_total", feature=ANY)] = len(uses)
    for f in features:
        samples[_key("adoptstream_feature_uses_total", feature=f)] = sum(1 for e in uses if e.feature == f)

    samples[_key("adoptstream_label_overflow_values", label="feature")] = 0
    samples[_key("adoptstream_label_overflow_values", label="cohort")] = 0
    samples[_key("adoptstream_label_overflow_values", label="feature_cohort")] = 0
    return samples
