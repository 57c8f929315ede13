"""Internal records on the by-user topic: packs of entries (`core.entries`), many input messages each.

A by-user record (no key) holds a pack, `[version, [entry, ...]]`, of entries whose users (or, for
invalid messages, input partitions) all belong to that by-user partition. Packing amortises the
per-record cost of Kafka clients and broker over hundreds of events. A pack holds at most
`PACK_MAX_ENTRIES` entries and `PACK_MAX_BYTES` bytes, whatever the ids' lengths.

Records written before named entries (a bare list of entries, or one entry per record keyed by user)
are still read.
"""

from __future__ import annotations

import zlib

import msgspec

from adoptstream.core.codec import loads
from adoptstream.core.entries import Entry, EventEntry, FutureEntry, InvalidEntry

PACK_VERSION = 2
PACK_MAX_ENTRIES = 512
# far below the broker's 1 MiB message limit and the producer's 512 KiB batch, whatever the entries
PACK_MAX_BYTES = 256 * 1024
_LEGACY_TYPES = ("signup", "exposure", "use")  # type codes of the records before named entries


class Pack(msgspec.Struct, array_like=True, gc=False):
    version: int
    entries: list[Entry]


_encode = msgspec.json.Encoder().encode
_decode_pack = msgspec.json.Decoder(Pack).decode


def user_partition(user_id: str, partitions: int) -> int:
    """The by-user partition that owns a user (stable across processes and versions)."""
    return zlib.crc32(user_id.encode()) % partitions


def rejection_partition(src_partition: int, partitions: int) -> int:
    """The by-user partition that counts the invalid messages of one input partition."""
    return src_partition % partitions


def entry_partition(entry: Entry, partitions: int) -> int:
    """The by-user partition an entry goes to."""
    if type(entry) is InvalidEntry:
        return rejection_partition(entry.src_partition, partitions)
    return user_partition(entry.user_id, partitions)  # type: ignore[union-attr]


def packs(entries: list[Entry]) -> list[bytes]:
    """Record values for a partition's entries, in order, within both pack limits."""
    out: list[bytes] = []
    for i in range(0, len(entries), PACK_MAX_ENTRIES):
        _pack_into(out, entries[i : i + PACK_MAX_ENTRIES])
    return out


def _pack_into(out: list[bytes], entries: list[Entry]) -> None:
    value = _encode(Pack(PACK_VERSION, entries))
    if len(value) <= PACK_MAX_BYTES or len(entries) == 1:  # one entry is a few KiB at most
        out.append(value)
        return
    half = len(entries) // 2
    _pack_into(out, entries[:half])
    _pack_into(out, entries[half:])


def unpack(key: bytes | None, value: bytes) -> list[Entry]:
    """The entries of one by-user record."""
    try:
        pack = _decode_pack(value)
    except msgspec.DecodeError:
        return _unpack_legacy(key, value)
    if pack.version != PACK_VERSION:
        raise ValueError(f"unknown by-user pack version {pack.version}")
    return pack.entries


def _unpack_legacy(key: bytes | None, value: bytes) -> list[Entry]:
    """Records of before named entries: a list of positional entries, or one entry keyed by user."""
    fields = loads(value)
    if fields and type(fields[0]) is list:
        return [_legacy_entry(e) for e in fields]
    user_id = None if key is None else key.decode()
    return [_legacy_entry([*fields[:3], user_id, *fields[3:]])]


def _legacy_entry(fields: list) -> Entry:
    if len(fields) == 5:  # [src_partition, src_offset, arrival_ms, user_id | None, 0 invalid | 1 future]
        p, off, arrival, user_id, code = fields
        return InvalidEntry(p, off, arrival) if code == 0 else FutureEntry(p, off, arrival, user_id)
    p, off, arrival, user_id, event_id, type_code, feature, ts_ns, cohort = fields
    return EventEntry(p, off, arrival, user_id, event_id, _LEGACY_TYPES[type_code], feature, ts_ns, cohort)
