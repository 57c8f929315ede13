"""Event format of CONTRACT sections 1 and 3.1: strict parsing and validation.

`parse_event` turns one Kafka message value into an `Event` or raises `InvalidEvent` with a short
reason. Event time is kept as integer nanoseconds since the epoch (`ts_ns`) so that differences and
bucket boundaries are exact.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Annotated, Literal

import msgspec
import orjson

MAX_EVENT_BYTES = 65_536
# Deeper JSON is invalid (RFC 8259 lets a parser limit nesting): parsing then stays in C and costs
# about the same for any 64 KiB, where a parser of unbounded depth in Python took ~57 ms for one.
MAX_NESTING = 1024
FUTURE_TOLERANCE_NS = 5 * 60 * 1_000_000_000
NS_PER_MS = 1_000_000
EVENT_TYPES = frozenset(("signup", "exposure", "use", "feedback"))
SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}  # lowest, highest score
MAX_DURATION_MS = 86_400_000
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


class Event(msgspec.Struct, gc=False):
    """One valid event. `feature` is None for signups (and answers about the product as a whole),
    `cohort` None when absent; `duration_ms` only on uses that carry one, `scale` and `score` only on
    feedback."""

    event_id: str
    user_id: str
    type: str  # signup | exposure | use | feedback
    feature: str | None
    ts_ns: int
    cohort: str | None
    duration_ms: int | None = None
    scale: str | None = None
    score: int | None = None


_UNSET = msgspec.UNSET


class _Wire(msgspec.Struct):
    """The contract's fields as msgspec decodes them straight from the bytes (others are skipped).

    msgspec's `int` takes a JSON integer only (no fraction or exponent part, not a boolean, not a
    string); a field this struct types but an event type ignores (a `score` on a use) with another
    type makes the fast path give way to the checked path, which ignores it.
    """

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    type: Literal["signup", "exposure", "use", "feedback"]
    ts: int | float | str
    feature: str | None = None
    cohort: str | None = None
    duration_ms: int | msgspec.UnsetType = _UNSET  # null is not absent: a use with it is invalid
    scale: str | msgspec.UnsetType = _UNSET
    score: int | msgspec.UnsetType = _UNSET


_decode_wire = msgspec.json.Decoder(_Wire).decode


def parse_event(value: bytes | None) -> Event:
    """Parse and validate one message value; raise `InvalidEvent` on any rule broken.

    Fast path: msgspec decodes and type-checks the contract's fields in C, without building a dict;
    the rest is checked here. Anything it does not take (a wrong type, deep nesting, bad JSON) goes
    to `_parse_checked`, which decides (it may still accept) and gives the reason. msgspec
    skips unknown fields without checking their UTF-8, hence the explicit check of non-ASCII input.
    """
    if value is None or len(value) > MAX_EVENT_BYTES:
        return _parse_checked(value)
    # the nesting cap: msgspec has none of its own (how deep it goes depends on the Python version)
    if len(value) > MAX_NESTING and value.count(b"[") + value.count(b"{") > MAX_NESTING:
        return _parse_checked(value)
    try:
        if not value.isascii():
            value.decode()  # strict UTF-8: no junk bytes, no encoded surrogates
        wire = _decode_wire(value)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        return _parse_checked(value)
    etype = wire.type
    duration_ms = scale = score = None
    if etype == "signup":
        feature = None
    elif etype == "feedback":
        feature = wire.feature  # optional: null or absent, the answer is about the whole product
        if feature is not None and feature not in _valid_features:
            _check_feature(feature)
        scale, score = _check_answer(wire.scale, wire.score)
    else:
        feature = wire.feature
        if feature is None or feature not in _valid_features:
            _check_feature(feature)
        if etype == "use" and wire.duration_ms is not _UNSET:
            duration_ms = _check_duration(wire.duration_ms)
    ts_ns = parse_ts_ns(wire.ts)
    cohort = wire.cohort
    if cohort is not None and cohort not in _valid_cohorts:
        _check_cohort(cohort)
    return Event(wire.event_id, wire.user_id, etype, feature, ts_ns, cohort, duration_ms, scale, score)


def _parse_checked(value: bytes | None) -> Event:
    """`parse_event` through orjson and checks in Python: decides every message and says why."""
    if value is None:
        raise InvalidEvent("empty message (null value)")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"message larger than {MAX_EVENT_BYTES} bytes")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # the nesting cap: orjson's own limit
            raise InvalidEvent(f"JSON nested deeper than {MAX_NESTING} levels") from None
        raise InvalidEvent(f"not strict JSON: {exc}") from None
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
    duration_ms = scale = score = None
    if etype == "use" or etype == "exposure":
        feature = get("feature")
        if type(feature) is not str or feature not in _valid_features:
            _check_feature(feature)
        if etype == "use" and "duration_ms" in obj:
            duration_ms = _check_duration(obj["duration_ms"])
    elif etype == "signup":
        feature = None
    elif etype == "feedback":
        feature = get("feature")
        if feature is not None and (type(feature) is not str or feature not in _valid_features):
            _check_feature(feature)
        scale, score = _check_answer(get("scale", _UNSET), get("score", _UNSET))
    else:
        raise InvalidEvent("type must be one of signup, exposure, use, feedback")
    if "ts" not in obj:
        raise InvalidEvent("ts missing")
    ts_ns = parse_ts_ns(obj["ts"])
    cohort = get("cohort")
    if cohort is not None and (type(cohort) is not str or cohort not in _valid_cohorts):
        _check_cohort(cohort)
    return Event(event_id, user_id, etype, feature, ts_ns, cohort, duration_ms, scale, score)


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


def _check_answer(scale: object, score: object) -> tuple[str, int]:
    """A feedback's (scale, score): a known scale and a JSON integer in its range."""
    bounds = SCALES.get(scale) if type(scale) is str else None  # type: ignore[call-overload]
    if bounds is None:
        raise InvalidEvent("scale must be one of nps, csat, ces")
    low, high = bounds
    if type(score) is not int or not low <= score <= high:  # type() excludes booleans
        raise InvalidEvent(f"score must be a JSON integer from {low} to {high} on the {scale} scale")
    return scale, score  # type: ignore[return-value]


def _check_duration(duration_ms: object) -> int:
    """A use's `duration_ms`: when present, a JSON integer from 0 to 86,400,000."""
    if type(duration_ms) is not int or not 0 <= duration_ms <= MAX_DURATION_MS:
        raise InvalidEvent(f"duration_ms must be a JSON integer from 0 to {MAX_DURATION_MS}")
    return duration_ms


def parse_ts_ns(ts: object) -> int:
    """Event time as integer ns: epoch milliseconds (int/float) or ISO 8601 with a UTC offset."""
    kind = type(ts)
    if kind is int:
        return ts * NS_PER_MS  # type: ignore[operator]
    if kind is str:
        ns = _fast_iso_ns(ts)  # type: ignore[arg-type]
        return _parse_iso_ns(ts) if ns is None else ns  # type: ignore[arg-type]
    if kind is float:
        # repr() is the shortest text that round-trips: exact for what the producer wrote.
        text = repr(ts)
        whole, dot, fraction = text.partition(".")
        if dot and len(fraction) <= 6 and fraction.isdigit():  # plain, at most ns: integer arithmetic
            ns = abs(int(whole)) * NS_PER_MS + int(fraction.ljust(6, "0"))
            return -ns if text[0] == "-" else ns
        try:
            return int((Decimal(text) * NS_PER_MS).to_integral_value())
        except (InvalidOperation, ValueError, OverflowError):
            raise InvalidEvent("ts is not a finite number") from None
    raise InvalidEvent("ts must be epoch milliseconds or an ISO 8601 string with UTC offset")


# The common RFC 3339 shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM)`, read by position with dict
# lookups (dates and zones cached, two-digit fields from fixed tables); anything else, or anything out
# of range, returns None and the general path below decides. Both give the same nanoseconds (tested
# against each other). Events of a stream share days and zones, so the caches stay small; bounded.
_CACHE_CAP = 100_000
_TWO_DIGITS = {f"{i:02d}": i for i in range(60)}  # "00".."59": minutes and seconds
_HOURS = {f"{i:02d}": i for i in range(24)}
_FRACTION_SCALE = tuple(10 ** (9 - n) for n in range(10))  # by number of fraction digits
_DATE_RE = re.compile(r"\d{4}-\d\d-\d\d", re.ASCII)
_ZONE_RE = re.compile(r"[+-](\d\d):(\d\d)", re.ASCII)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_days: dict[str, int | None] = {}  # "YYYY-MM-DD" -> days since the epoch (None: no such date)
_zones: dict[str, int | None] = {"Z": 0, "z": 0}  # "+05:30" -> seconds to subtract (None: invalid)


def _fast_iso_ns(ts: str) -> int | None:
    if len(ts) < 20 or ts[13] != ":" or ts[16] != ":" or (ts[10] != "T" and ts[10] != "t"):
        return None
    day = _days.get(ts[:10], -1)
    if day == -1:
        day = _day_number(ts[:10])
    hour = _HOURS.get(ts[11:13])
    minute = _TWO_DIGITS.get(ts[14:16])
    second = _TWO_DIGITS.get(ts[17:19])
    if day is None or hour is None or minute is None or second is None:
        return None
    zone = ts[-1:] if ts[-1] in "Zz" else ts[-6:]
    offset = _zones.get(zone, -1)
    if offset == -1:
        offset = _zone_seconds(zone)
    if offset is None:
        return None
    ns = (day * 86_400 + hour * 3_600 + minute * 60 + second - offset) * 1_000_000_000
    fraction = ts[19 : len(ts) - len(zone)]
    if not fraction:
        return ns
    digits = fraction[1:]
    if fraction[0] != "." or not 0 < len(digits) <= 9 or not digits.isdigit() or not digits.isascii():
        return None
    return ns + int(digits) * _FRACTION_SCALE[len(digits)]


def _day_number(text: str) -> int | None:
    days = None
    if _DATE_RE.fullmatch(text):
        try:
            days = date(int(text[:4]), int(text[5:7]), int(text[8:10])).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            days = None
    if len(_days) >= _CACHE_CAP:
        _days.clear()
    _days[text] = days
    return days


def _zone_seconds(zone: str) -> int | None:
    m = _ZONE_RE.fullmatch(zone)
    offset = None
    if m is not None:
        hours, minutes = int(m.group(1)), int(m.group(2))
        if hours <= 23 and minutes <= 59:
            offset = hours * 3_600 + minutes * 60
            if zone[0] == "-":
                offset = -offset
    if len(_zones) >= _CACHE_CAP:
        _zones.clear()
        _zones.update(Z=0, z=0)
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


def future_horizon_ns(now_ns: int) -> int:
    """The latest event time that is not `future` at clock `now_ns`."""
    return now_ns + FUTURE_TOLERANCE_NS


def is_future(ts_ns: int, now_ns: int) -> bool:
    """True when the event time is more than 5 minutes ahead of the monitor's clock."""
    return ts_ns > future_horizon_ns(now_ns)
