"""A hot user cannot break the state: dedup memory in shard records, every record under the broker's limit."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import Pipeline, coords_of, flat

from adoptstream.core.dedup import INLINE_SEEN_MAX, SHARD_SEEN_MAX, SeenShard, shard_key
from adoptstream.core.state import DAY_NS, UserState
from adoptstream.core.totals import AdoptionTotals
from adoptstream.runtime import records
from adoptstream.runtime.processor import apply_batch, derive_totals
from adoptstream.runtime.store import MemoryStore

MS = 1_000_000
HOUR_NS = 3_600 * 10**9
T0 = 19_876 * DAY_NS + 30 * 60 * 10**9  # 00:30 UTC
BROKER_MESSAGE_MAX = 1_048_588  # Kafka's default message.max.bytes
USER = "用户😀" * 85 + "x"  # 256 characters, 767 bytes of UTF-8


def event_id(i: int) -> str:
    return f"{i:08d}-" + "é" * 119  # 128 characters


def use(i: int, ts_ns: int, eid: str | None = None) -> bytes:
    obj = {"event_id": eid or event_id(i), "user_id": USER, "type": "use", "feature": "f", "ts": ts_ns // MS}
    return json.dumps(obj, ensure_ascii=False).encode()


def run_hot_user(n: int, crash_at: int | None = None) -> tuple[Pipeline, int]:
    """`n` distinct events of one user over 22 hours of arrivals, every 7th sent again 21 hours later,
    through ingest and state stage in realistic batches; optionally a crash of the state stage."""
    pipe = Pipeline(2, T0)
    raws: list[tuple[int, bytes]] = []  # (arrival ns, message)
    for i in range(n):
        arrival = T0 + i * (21 * HOUR_NS // n)
        raws.append((arrival, use(i, arrival - 10**9)))
    dups = [(T0 + 22 * HOUR_NS, use(i, T0, event_id(i))) for i in range(0, n, 7)]
    raws += dups
    coords = coords_of([0] * len(raws))
    for start in range(0, len(raws), 5_000):  # ingest batches of 5,000 messages, each at its clock
        chunk = raws[start : start + 5_000]
        pipe.ingest(coords[start : start + 5_000], [m for _, m in chunk], chunk[-1][0], batch=len(chunk))
    for part in pipe.parts:
        if crash_at is not None and len(part.by_user) > crash_at:
            part.process(crash_at, batch=8)
            part.process(crash_at + 4, batch=8)  # applied and acknowledged, but not committed
            part.crash_and_restore(part.store.encoded(), len(part.changelog), crash_at)
        part.process(batch=40)  # ~20,000 entries per batch, as the worker reads them
    return pipe, len(dups)


def test_100k_events_of_one_user_in_a_day_with_long_ids_end_exact() -> None:
    pipe, dups = run_hot_user(100_000, crash_at=60)
    outcomes = {k: v for k, v in flat(pipe.totals()).outcomes.items() if v}
    assert outcomes == {"accepted": 100_000, "duplicate": dups}
    part = next(p for p in pipe.parts if p.by_user)
    assert max(len(v) for v in part.by_user) <= records.PACK_MAX_BYTES
    sizes = [len(key) + len(value or b"") for key, value in part.changelog]
    assert max(sizes) < BROKER_MESSAGE_MAX // 2, max(sizes)
    stored = part.store.encoded()
    user = UserState.decode(next(v for k, v in stored.items() if k[:1] == b"u"))
    assert user.seen == {} and user.dedup_depth >= 8  # 100,000 ids in 2**depth shards
    shards = [SeenShard.decode(v) for k, v in stored.items() if k[:1] == b"d"]
    assert len(shards) == 1 << user.dedup_depth  # the shards of older depths were deleted
    assert sum(len(s.ids) for s in shards) == 100_000
    assert all(len(s.ids) <= SHARD_SEEN_MAX for s in shards)
    assert flat(pipe.derived()) == flat(pipe.totals())


def test_a_user_between_the_limits_keeps_its_ids_or_moves_them() -> None:
    pipe, _ = run_hot_user(INLINE_SEEN_MAX)
    (user,) = [UserState.decode(v) for p in pipe.parts for k, v in p.store.encoded().items() if k[:1] == b"u"]
    assert user.dedup_depth == 0 and len(user.seen) == INLINE_SEEN_MAX
    pipe, _ = run_hot_user(INLINE_SEEN_MAX + 1)
    (user,) = [UserState.decode(v) for p in pipe.parts for k, v in p.store.encoded().items() if k[:1] == b"u"]
    assert user.dedup_depth > 0 and user.seen == {}


def _batches(n: int) -> list[list[bytes]]:
    """By-user packs of one hot user: `n` new events, then some of them again, in three batches."""
    pipe = Pipeline(1, T0)
    raws = [use(i, T0) for i in range(n)] + [use(i, T0) for i in range(0, n, 3)]
    pipe.ingest(coords_of([0] * len(raws)), raws, T0 + HOUR_NS, batch=len(raws))
    packs = pipe.parts[0].by_user
    third = max(1, len(packs) // 3)
    return [packs[:third], packs[third : 2 * third], packs[2 * third :]]


@settings(max_examples=40, deadline=None)
@given(st.integers(300, 2_500), st.data())
def test_a_crash_keeping_any_prefix_of_a_batch_s_changelog_records_stays_exact(
    n: int, data: st.DataObject
) -> None:
    """The changelog write of a batch stops anywhere (spills, splits, deletions of old shards): the
    restart reads what was written, applies the batch again, and every outcome stays exact."""
    batches = _batches(n)
    expected = {"accepted": n, "duplicate": len(range(0, n, 3))}

    store = MemoryStore()
    totals = AdoptionTotals()
    changelog: list[tuple[bytes, bytes | None]] = []
    for i, batch in enumerate(batches):
        applied = apply_batch(store, totals, [(None, v) for v in batch])
        written = list(zip(applied.keys, applied.values, strict=True))
        if i == data.draw(st.integers(0, len(batches) - 1), label="crashing batch"):
            kept = data.draw(st.integers(0, len(written)), label="records acknowledged")
            changelog += written[:kept]
            store = MemoryStore()  # the restart: the store from the changelog, the totals derived
            store.save_raw(dict(changelog), len(changelog) - 1)
            totals = derive_totals(store)
            applied = apply_batch(store, totals, [(None, v) for v in batch])  # read again
            written = list(zip(applied.keys, applied.values, strict=True))
        changelog += written
        store.save(applied.keys, applied.values, len(changelog) - 1)
    assert {k: v for k, v in totals.outcomes.items() if v} == expected


def test_shard_keys_cannot_collide_across_users() -> None:
    keys = {shard_key(u, d, i) for u in ("a", "a\x00", "\x00a", "ab") for d in (1, 2) for i in range(4)}
    assert len(keys) == 4 * 2 * 4


@pytest.mark.parametrize("n", [INLINE_SEEN_MAX + 1, 3 * SHARD_SEEN_MAX])
def test_duplicates_across_batches_and_shards_are_recognised(n: int) -> None:
    store = MemoryStore()
    totals = AdoptionTotals()
    for batch in _batches(n):
        applied = apply_batch(store, totals, [(None, v) for v in batch])
        store.save(applied.keys, applied.values, 0)
    assert {k: v for k, v in totals.outcomes.items() if v} == {
        "accepted": n,
        "duplicate": len(range(0, n, 3)),
    }
