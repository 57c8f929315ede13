"""Event format of CONTRACT section 1: strict parsing and validation.

`parse_event` turns one Kafka message value into an `Event` or raises `InvalidEvent` with a short
reason. Event time is kept as integer nanoseconds since the epoch (`ts_ns`) so that differences and
bucket boundaries are exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

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
    event_id = _string(obj, "event_id", 128)
    user_id = _string(obj, "user_id", 256)
    etype = obj.get("type")
    if type(etype) is not str or etype not in EVENT_TYPES:
        raise InvalidEvent("type must be one of signup, exposure, use")
    feature: str | None = None
    if etype != "signup":
        feature = obj.get("feature")
        if type(feature) is not str or FEATURE_RE.fullmatch(feature) is None:
            raise InvalidEvent("feature missing or not matching ^[a-z0-9][a-z0-9_.:/-]{0,127}$")
    if "ts" not in obj:
        raise InvalidEvent("ts missing")
    ts_ns = parse_ts_ns(obj["ts"])
    cohort = obj.get("cohort")
    if cohort is not None and (
        type(cohort) is not str or not 1 <= len(cohort) <= 64 or not cohort.isprintable()
    ):
        raise InvalidEvent("cohort must be 1-64 printable characters")
    return Event(event_id, user_id, etype, feature, ts_ns, cohort)


def _string(obj: dict[str, Any], field: str, max_len: int) -> str:
    value = obj.get(field)
    if type(value) is not str or not 1 <= len(value) <= max_len:
        raise InvalidEvent(f"{field} must be a string of 1-{max_len} characters")
    return value


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
        return _parse_iso_ns(ts)  # type: ignore[arg-type]
    raise InvalidEvent("ts must be epoch milliseconds or an ISO 8601 string with UTC offset")


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
