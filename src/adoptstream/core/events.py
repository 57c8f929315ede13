"""Event format of CONTRACT section 1: strict parsing and validation.

`parse_event` turns one Kafka message value into an `Event` or raises `InvalidEvent` with a short
reason. Event time is kept as integer nanoseconds since the epoch (`ts_ns`) so that differences and
bucket boundaries are exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum

import orjson

from adoptstream.core.deepjson import DeepJSONError, loads_deep

MAX_EVENT_BYTES = 65_536
FUTURE_TOLERANCE_NS = 5 * 60 * 1_000_000_000
NS_PER_MS = 1_000_000
EVENT_TYPES = frozenset(("signup", "exposure", "use"))
FEATURE_RE = re.compile(r"[a-z0-9][a-z0-9_.:/-]{0,127}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Outcome(str, Enum):
    """The one outcome every message gets (CONTRACT section 1)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    FUTURE = "future"


class InvalidEvent(ValueError):
    """A message that breaks the event rules; `reason` is short and safe to put in a header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Event:
    """One valid usage event. `feature` is None for signups, `cohort` None when absent."""

    event_id: str
    user_id: str
    type: str
    feature: str | None
    ts_ns: int
    cohort: str | None


def parse_event(value: bytes | None) -> Event:
    """Parse and validate one message value; raise `InvalidEvent` on any rule broken."""
    if value is None:
        raise InvalidEvent("empty message (null value)")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"message larger than {MAX_EVENT_BYTES} bytes")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if not str(exc).startswith("depth limit exceeded"):
            raise InvalidEvent(f"not strict JSON: {exc}") from None
        try:  # valid JSON nested deeper than orjson goes (an ignored field may be)
            obj = loads_deep(value)
        except DeepJSONError as deep:
            raise InvalidEvent(f"not strict JSON: {deep}") from None
    if type(obj) is not dict:
        raise InvalidEvent("not a JSON object")
    get = obj.get
    event_id = get("event_id")
    if type(event_id) is not str or not 0 < len(event_id) <= 128:
        raise InvalidEvent("event_id must be a string of 1-128 characters")
    user_id = get("user_id")
    if type(user_id) is not str or not 0 < len(user_id) <= 256:
        raise InvalidEvent("user_id must be a string of 1-256 characters")
    etype = get("type")
    if etype == "signup":
        feature = None
    elif etype == "use" or etype == "exposure":
        feature = get("feature")
        if type(feature) is not str or feature not in _valid_features:
            _check_feature(feature)
    else:
        raise InvalidEvent("type must be one of signup, exposure, use")
    if "ts" not in obj:
        raise InvalidEvent("ts missing")
    ts_ns = parse_ts_ns(obj["ts"])
    cohort = get("cohort")
    if cohort is not None and (type(cohort) is not str or cohort not in _valid_cohorts):
        _check_cohort(cohort)
    return Event(event_id, user_id, etype, feature, ts_ns, cohort)


# Values already found valid: most events repeat a few features and cohorts, so the checks run once.
_KNOWN_CAP = 10_000
_valid_features: set[str] = set()
_valid_cohorts: set[str] = set()


def _check_feature(feature: object) -> None:
    if type(feature) is not str or FEATURE_RE.fullmatch(feature) is None:
        raise InvalidEvent("feature missing or not matching ^[a-z0-9][a-z0-9_.:/-]{0,127}$")
    if len(_valid_features) < _KNOWN_CAP:
        _valid_features.add(feature)


def _check_cohort(cohort: object) -> None:
    if type(cohort) is not str or not 1 <= len(cohort) <= 64 or not cohort.isprintable():
        raise InvalidEvent("cohort must be 1-64 printable characters")
    if len(_valid_cohorts) < _KNOWN_CAP:
        _valid_cohorts.add(cohort)


def parse_ts_ns(ts: object) -> int:
    """Event time as integer ns: epoch milliseconds (int/float) or ISO 8601 with a UTC offset."""
    kind = type(ts)
    if kind is int:
        return ts * NS_PER_MS  # type: ignore[operator]
    if kind is float:
        # repr() is the shortest text that round-trips: exact for what the producer wrote.
        try:
            return int((Decimal(repr(ts)) * NS_PER_MS).to_integral_value())
        except (InvalidOperation, ValueError, OverflowError):
            raise InvalidEvent("ts is not a finite number") from None
    if kind is str:
        fast = _RFC3339_FAST.fullmatch(ts)  # type: ignore[arg-type]
        if fast is not None:
            ns = _fast_iso_ns(fast)
            if ns is not None:
                return ns
        return _parse_iso_ns(ts)  # type: ignore[arg-type]
    raise InvalidEvent("ts must be epoch milliseconds or an ISO 8601 string with UTC offset")


# The common RFC 3339 shape, computed from cached minutes and zones; anything else (or out of range)
# takes the general path below, which decides. Both give the same nanoseconds (tested against each
# other). Events of a stream share minutes and zones, so the caches stay small; they are bounded.
_RFC3339_FAST = re.compile(
    r"((\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d)):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)",
    re.ASCII,
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_CACHE_CAP = 100_000
_minutes: dict[str, int | None] = {}  # "YYYY-MM-DDTHH:MM" -> epoch seconds (None: out of range)
_zones: dict[str, int | None] = {}  # "Z", "+05:30" -> seconds to subtract (None: out of range)


def _fast_iso_ns(m: re.Match[str]) -> int | None:
    minute, second, fraction, zone = m.group(1, 7, 8, 9)
    base = _minutes.get(minute, -1)
    if base == -1:
        base = _minute_seconds(m)
    offset = _zones.get(zone, -1)
    if offset == -1:
        offset = _zone_seconds(zone)
    sec = int(second)
    if base is None or offset is None or sec > 59:
        return None
    ns = (base + sec - offset) * 1_000_000_000
    return ns + int(fraction.ljust(9, "0")) if fraction else ns


def _minute_seconds(m: re.Match[str]) -> int | None:
    year, month, day, hour, minute = (int(g) for g in m.group(2, 3, 4, 5, 6))
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        days = None
    base = None if days is None or hour > 23 or minute > 59 else days * 86_400 + hour * 3_600 + minute * 60
    if len(_minutes) >= _CACHE_CAP:
        _minutes.clear()
    _minutes[m.group(1)] = base
    return base


def _zone_seconds(zone: str) -> int | None:
    if zone in ("Z", "z"):
        offset: int | None = 0
    else:
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        offset = None if hours > 23 or minutes > 59 else (hours * 3_600 + minutes * 60)
        if offset is not None and zone[0] == "-":
            offset = -offset
    if len(_zones) >= _CACHE_CAP:
        _zones.clear()
    _zones[zone] = offset
    return offset


_OFFSET_RE = re.compile(r"(?:[Zz]|[+-](\d\d)(?::?(\d\d))?)\Z")
_FRACTION_RE = re.compile(r"[.,](\d+)\Z")


def _parse_iso_ns(text: str) -> int:
    """ISO 8601 / RFC 3339 date-time that ends in a UTC offset (Z, +05:30, +0530, +05)."""
    offset = _OFFSET_RE.search(text) if text.isascii() else None
    if offset is None:
        raise InvalidEvent("ts string is not ISO 8601 with a UTC offset")
    body = text[: offset.start()]
    hours, minutes = offset.group(1), offset.group(2)
    if not body[-1:].isdigit() or (hours and (int(hours) > 23 or int(minutes or 0) > 59)):
        raise InvalidEvent("ts string is not ISO 8601 with a UTC offset")
    zone = "+00:00" if hours is None else text[offset.start() :]
    try:
        # RFC 3339 allows a lower-case 't'; fromisoformat wants upper case.
        parsed = datetime.fromisoformat(body.upper() + zone)
    except ValueError:
        raise InvalidEvent("ts string is not ISO 8601 / RFC 3339") from None
    if parsed.tzinfo is None:
        raise InvalidEvent("ts string has no UTC offset")
    delta = parsed - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    fraction = _FRACTION_RE.search(body)
    sub_micro = int(fraction.group(1)[6:9].ljust(3, "0")) if fraction and len(fraction.group(1)) > 6 else 0
    return micros * 1_000 + sub_micro  # datetime keeps microseconds; digits 7-9 are nanoseconds


def is_future(ts_ns: int, now_ns: int) -> bool:
    """True when the event time is more than 5 minutes ahead of the monitor's clock."""
    return ts_ns > now_ns + FUTURE_TOLERANCE_NS
