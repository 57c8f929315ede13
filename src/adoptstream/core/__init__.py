"""Pure core: event parsing/validation and exact adoption state. No I/O, no asyncio."""

from adoptstream.core.events import (
    MAX_EVENT_BYTES,
    Event,
    InvalidEvent,
    Outcome,
    is_future,
    parse_event,
    parse_ts_ns,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "Event",
    "InvalidEvent",
    "Outcome",
    "is_future",
    "parse_event",
    "parse_ts_ns",
]
