"""By-user records: packs of named entries, their limits, and the records written before them."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import ConsumerRecord

from adoptstream.core.entries import (
    AnswerEntry,
    EventEntry,
    FutureEntry,
    InvalidEntry,
    TimedUseEntry,
    event_entry,
)
from adoptstream.core.events import Event
from adoptstream.runtime import records
from adoptstream.runtime.ingest import route

EVENT = Event("e1", "alice", "use", "search", 1_717_200_000 * 10**9, "wave-1")
NOW_NS = 1_717_200_060 * 10**9


def test_packs_split_at_the_count_limit_and_keep_order() -> None:
    entries = [event_entry(EVENT, 0, i, 5) for i in range(2 * records.PACK_MAX_ENTRIES + 3)]
    values = records.packs(entries)
    assert [len(records.unpack(None, v)) for v in values] == [
        records.PACK_MAX_ENTRIES,
        records.PACK_MAX_ENTRIES,
        3,
    ]
    assert [e for v in values for e in records.unpack(None, v)] == entries
    assert records.packs([]) == []


def test_packs_of_the_longest_ids_stay_under_the_byte_limit() -> None:
    """512 entries of 256-character multi-byte user ids, 128-character ids and 64-character cohorts
    would be ~1.3 MB in one pack (over the broker's 1 MiB message limit): packs split by bytes too."""
    big = Event("é" * 127 + "\x01", "😀" * 256, "exposure", "f" * 128, -(2**70), "ü" * 63 + "\x7f")
    entries = [event_entry(big, 2**31 - 1, 2**62 + i, 2**41) for i in range(records.PACK_MAX_ENTRIES)]
    values = records.packs(entries)
    assert len(values) > 1
    assert all(len(v) <= records.PACK_MAX_BYTES for v in values)
    assert [e for v in values for e in records.unpack(None, v)] == entries


def test_entries_have_names_and_compact_bytes() -> None:
    timed = Event("e2", "alice", "use", "search", 5, None, duration_ms=1_500)
    answer = Event("e3", "alice", "feedback", None, 6, None, scale="nps", score=9)
    entries = [
        event_entry(EVENT, 3, 7, 9),
        event_entry(timed, 3, 8, 9),
        event_entry(answer, 3, 9, 9),
        FutureEntry(1, 2, 3, "bob"),
        InvalidEntry(1, 4, 3),
    ]
    assert [type(e) for e in entries[:3]] == [EventEntry, TimedUseEntry, AnswerEntry]
    (value,) = records.packs(entries)
    assert orjson.loads(value) == [
        records.PACK_VERSION,
        [
            [0, 3, 7, 9, "alice", "e1", "use", "search", EVENT.ts_ns, "wave-1"],  # tag first
            [3, 3, 8, 9, "alice", "e2", "use", "search", 5, None, 1_500],
            [4, 3, 9, 9, "alice", "e3", "feedback", None, 6, None, "nps", 9],
            [1, 1, 2, 3, "bob"],
            [2, 1, 4, 3],
        ],
    ]
    assert records.unpack(None, value) == entries


def test_records_of_before_named_entries_still_read() -> None:
    expected = EventEntry(3, 7, 9, "alice", "e1", "use", "search", EVENT.ts_ns, "wave-1")
    old_pack = orjson.dumps(
        [[3, 7, 9, "alice", "e1", 2, "search", EVENT.ts_ns, "wave-1"], [1, 2, 3, "bob", 1]]
    )
    assert records.unpack(None, old_pack) == [expected, FutureEntry(1, 2, 3, "bob")]
    old_event = orjson.dumps([3, 7, 9, "e1", 2, "search", EVENT.ts_ns, "wave-1"])
    assert records.unpack(b"alice", old_event) == [expected]
    old_future = orjson.dumps([1, 2, 3, 1])
    assert records.unpack(b"bob", old_future) == [FutureEntry(1, 2, 3, "bob")]
    old_invalid = orjson.dumps([1, 4, 3, 0])
    assert records.unpack(None, old_invalid) == [InvalidEntry(1, 4, 3)]


def test_a_pack_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        records.unpack(None, b"[9,[]]")


def test_route_packs_each_by_user_partition_and_routes_every_message() -> None:
    values = [
        orjson.dumps({"event_id": f"e{i}", "user_id": f"u{i % 50}", "type": "use", "feature": "f", "ts": 9})
        for i in range(1200)
    ] + [
        b"not json",
        orjson.dumps({"event_id": "x", "user_id": "u1", "type": "use", "feature": "f", "ts": 2**50}),
    ]
    recs = [ConsumerRecord("in", 0, i, 0, 0, None, v, None, 0, len(v), []) for i, v in enumerate(values)]
    routed = route(recs, 4, NOW_NS)
    assert [(d.record.offset, d.outcome.value) for d in routed.dead_letters] == [
        (1200, "invalid"),
        (1201, "future"),
    ]
    by_user = [(p, e) for p, entries in routed.by_user.items() for e in entries]
    assert sorted(e.src_offset for _, e in by_user) == list(range(1202))  # every input message exactly once
    for p, entry in by_user:
        assert p == records.entry_partition(entry, 4)
    for entries in routed.by_user.values():
        offsets = [e.src_offset for e in entries]
        assert offsets == sorted(offsets)  # input order kept in each partition
        values_out = records.packs(entries)
        assert len(values_out) <= 2 and [e for v in values_out for e in records.unpack(None, v)] == entries
