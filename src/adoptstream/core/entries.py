"""What the state stage applies: one entry per input message, re-keyed by user.

Every entry starts with its source coordinates (input partition and offset), which make replays
recognisable, and its arrival time (the ingest clock, which ages the deduplication memory). Entries
are msgspec structs encoded as JSON arrays, tag first (`[0, src_partition, src_offset, ...]`): the
names cost nothing on the wire.
"""

from __future__ import annotations

import msgspec

from adoptstream.core.events import Event


class EventEntry(msgspec.Struct, array_like=True, gc=False, tag=0, tag_field="kind"):
    """A valid event that is not in the future: accepted, or a duplicate."""

    src_partition: int
    src_offset: int
    arrival_ms: int
    user_id: str
    event_id: str
    type: str  # signup | exposure | use | feedback
    feature: str | None
    ts_ns: int
    cohort: str | None


class TimedUseEntry(EventEntry, tag=3):
    """A use that carries how long the task took (the other uses are plain `EventEntry`s)."""

    duration_ms: int


class AnswerEntry(EventEntry, tag=4):
    """A feedback event: one survey answer."""

    scale: str
    score: int


class FutureEntry(msgspec.Struct, array_like=True, gc=False, tag=1, tag_field="kind"):
    """A message too far ahead of the clock: counted in its user's state, where a later replay of the
    same message (which may no longer look future) is recognised."""

    src_partition: int
    src_offset: int
    arrival_ms: int
    user_id: str


class InvalidEntry(msgspec.Struct, array_like=True, gc=False, tag=2, tag_field="kind"):
    """An invalid message: it has no trustworthy user, so it is counted per input partition."""

    src_partition: int
    src_offset: int
    arrival_ms: int


Entry = EventEntry | TimedUseEntry | AnswerEntry | FutureEntry | InvalidEntry


def event_entry(event: Event, src_partition: int, src_offset: int, arrival_ms: int) -> EventEntry:
    """The entry of a valid event read at (`src_partition`, `src_offset`) when the clock read `arrival_ms`."""
    fields = (
        src_partition,
        src_offset,
        arrival_ms,
        event.user_id,
        event.event_id,
        event.type,
        event.feature,
        event.ts_ns,
        event.cohort,
    )
    if event.scale is not None:
        return AnswerEntry(*fields, event.scale, event.score)  # type: ignore[arg-type]
    if event.duration_ms is not None:
        return TimedUseEntry(*fields, event.duration_ms)
    return EventEntry(*fields)
