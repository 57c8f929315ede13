"""Internal records on the by-user topic: packs of entries, one entry per input message.

A by-user record (no key) holds a pack: a JSON list of up to `PACK_MAX_ENTRIES` entries whose users
(or input partitions) all belong to that by-user partition. Packing amortises the per-record cost of
Kafka clients and broker over hundreds of events. Every entry starts with its source coordinates
(input partition and offset), which make replays recognisable, and its arrival time:

- event:     `[src_partition, src_offset, arrival_ms, user_id, event_id, type_code, feature, ts_ns, cohort]`
- future:    `[src_partition, src_offset, arrival_ms, user_id, 1]` (counted in that user's state, where a
  later replay of the same message is recognised)
- invalid:   `[src_partition, src_offset, arrival_ms, None, 0]` (counted per input partition)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from adoptstream.core.codec import dumps, loads
from adoptstream.core.events import Event, EventFields, Outcome

EVENT_TYPES = ("signup", "exposure", "use")  # type codes 0, 1, 2 on the by-user topic
TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPES)}
REJECTED = (Outcome.INVALID, Outcome.FUTURE)  # rejection codes 0, 1
# at most ~600 bytes an entry (longest ids, feature and cohort): a full pack stays far below the
# producer's 512 KiB batch and the broker's 1 MiB message limit
PACK_MAX_ENTRIES = 512
Entry = list


def user_partition(user_id: str, partitions: int) -> int:
    """The by-user partition that owns a user (stable across processes and versions)."""
    return zlib.crc32(user_id.encode()) % partitions


def rejection_partition(src_partition: int, partitions: int) -> int:
    """The by-user partition that counts the rejections of one input partition."""
    return src_partition % partitions


def fields_entry(fields: EventFields, src_partition: int, src_offset: int, arrival_ms: int) -> Entry:
    """The entry of one valid event, from `parse_fields`' tuple (the ingest hot path)."""
    event_id, user_id, etype, feature, ts_ns, cohort = fields
    return [
        src_partition,
        src_offset,
        arrival_ms,
        user_id,
        event_id,
        TYPE_CODE[etype],
        feature,
        ts_ns,
        cohort,
    ]


def event_entry(event: Event, src_partition: int, src_offset: int, arrival_ms: int) -> Entry:
    fields = (event.event_id, event.user_id, event.type, event.feature, event.ts_ns, event.cohort)
    return fields_entry(fields, src_partition, src_offset, arrival_ms)


def rejection_entry(
    outcome: Outcome, src_partition: int, src_offset: int, arrival_ms: int, user_id: str | None = None
) -> Entry:
    return [src_partition, src_offset, arrival_ms, user_id, 0 if outcome is Outcome.INVALID else 1]


def packs(entries: list[Entry]) -> list[bytes]:
    """Record values for a partition's entries, in order, `PACK_MAX_ENTRIES` at most in each."""
    return [dumps(entries[i : i + PACK_MAX_ENTRIES]) for i in range(0, len(entries), PACK_MAX_ENTRIES)]


def unpack(key: bytes | None, value: bytes) -> list[Entry]:
    """The entries of one by-user record (also reads the one-message records of before packing)."""
    fields = loads(value)
    if not fields or type(fields[0]) is list:
        return fields  # type: ignore[no-any-return]
    user_id = None if key is None else key.decode()
    if len(fields) == 4:  # [src_partition, src_offset, arrival_ms, code]
        return [[*fields[:3], user_id, fields[3]]]
    return [[*fields[:3], user_id, *fields[3:]]]


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


def decode(entry: Entry) -> EventRecord | RejectionRecord:
    """One entry as an object (tests and tools; the state stage reads entries directly)."""
    if len(entry) == 5:
        p, off, arrival, user_id, code = entry
        return RejectionRecord(p, off, arrival, REJECTED[code], user_id)
    p, off, arrival, user_id, event_id, tcode, feature, ts_ns, cohort = entry
    return EventRecord(p, off, arrival, Event(event_id, user_id, EVENT_TYPES[tcode], feature, ts_ns, cohort))
