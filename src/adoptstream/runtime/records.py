"""Internal records on the by-user topic: every input message becomes exactly one of them.

An event record (key = user_id) carries the parsed event; a rejection record carries only the
outcome: keyed by user_id for a future message (counted in that user's state, where a later replay
of the same message is recognised), keyless for an invalid one (counted per input partition). All
carry their source coordinates (input partition and offset), which make replays recognisable.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from adoptstream.core.codec import dumps, loads
from adoptstream.core.events import Event, Outcome

EVENT_TYPES = ("signup", "exposure", "use")  # type codes 0, 1, 2 on the by-user topic
_TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPES)}
REJECTED = (Outcome.INVALID, Outcome.FUTURE)  # rejection codes 0, 1


def user_partition(user_id: str, partitions: int) -> int:
    """The by-user partition that owns a user (stable across processes and versions)."""
    return key_partition(user_id.encode(), partitions)


def key_partition(user_key: bytes, partitions: int) -> int:
    """`user_partition` of an already encoded user id."""
    return zlib.crc32(user_key) % partitions


def rejection_partition(src_partition: int, partitions: int) -> int:
    """The by-user partition that counts the rejections of one input partition."""
    return src_partition % partitions


def encode_event(event: Event, src_partition: int, src_offset: int, arrival_ms: int) -> bytes:
    return dumps(
        [
            src_partition,
            src_offset,
            arrival_ms,
            event.event_id,
            _TYPE_CODE[event.type],
            event.feature,
            event.ts_ns,
            event.cohort,
        ]
    )


def encode_rejection(outcome: Outcome, src_partition: int, src_offset: int, arrival_ms: int) -> bytes:
    return dumps([src_partition, src_offset, arrival_ms, 0 if outcome is Outcome.INVALID else 1])


@dataclass(slots=True)
class EventRecord:
    src_partition: int
    src_offset: int
    arrival_ms: int
    event: Event


@dataclass(slots=True)
class RejectionRecord:
    src_partition: int
    src_offset: int
    arrival_ms: int
    outcome: Outcome
    user_id: str | None = None


def decode(key: bytes | None, value: bytes) -> EventRecord | RejectionRecord:
    """Decode one by-user record."""
    fields = loads(value)
    if len(fields) == 4:
        p, off, arrival, code = fields
        return RejectionRecord(p, off, arrival, REJECTED[code], None if key is None else key.decode())
    p, off, arrival, event_id, tcode, feature, ts_ns, cohort = fields
    return EventRecord(
        p, off, arrival, Event(event_id, key.decode(), EVENT_TYPES[tcode], feature, ts_ns, cohort)
    )
