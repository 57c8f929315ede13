"""Totals snapshots: encoding, validity in a RocksDB store, and bringing them along a changelog tail."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adoptstream.core.entries import AnswerEntry, EventEntry, TimedUseEntry
from adoptstream.core.state import SourceOutcomes, UserState, decode_summary
from adoptstream.core.totals import AdoptionTotals, totals_of
from adoptstream.runtime import store as store_module
from adoptstream.runtime.processor import _snapshot_of, replace_in_totals
from adoptstream.runtime.store import MemoryStore, RocksStore, source_key, user_key

HOUR_NS = 3_600 * 10**9
T0 = 1_717_200_000 * 10**9

_event = st.tuples(
    st.sampled_from(["signup", "exposure", "use", "use", "feedback"]),
    st.sampled_from(["search", "export", "dark-mode", None]),
    st.one_of(
        st.integers(-5 * HOUR_NS, 40 * 24 * HOUR_NS),  # spans hours, days and every TTFU bucket
        st.integers(-100 * 24 * HOUR_NS, 0),  # dates of use further back than a state keeps
        st.just(-(2**70)),  # before 1677: beyond 64 bits
    ),
    st.sampled_from([None, "wave-1", "wave-2"]),
    st.one_of(st.none(), st.sampled_from([0, 500, 501, 3_600_001, 86_400_000])),
    st.tuples(st.sampled_from(["nps", "csat", "ces"]), st.integers(1, 5)),
)


@st.composite
def users(draw: st.DrawFn) -> UserState:
    user = UserState()
    for i, (etype, feature, dt, cohort, duration, (scale, score)) in enumerate(
        draw(st.lists(_event, max_size=8))
    ):
        if etype in ("exposure", "use") and feature is None:
            feature = "search"
        fields = (0, i, 0, "u", f"e{i}", etype, feature, T0 + dt, cohort)
        if etype == "use" and duration is not None:
            user.apply(TimedUseEntry(*fields, duration))
        elif etype == "feedback":
            user.apply(AnswerEntry(*fields, scale, score))
        else:
            user.apply(EventEntry(*fields))
    return user


def same(a: AdoptionTotals, b: AdoptionTotals) -> bool:
    """Equal counts, where a count of zero and no entry are the same (as for an exporter)."""
    return AdoptionTotals.decode(a.encode()) == AdoptionTotals.decode(b.encode())


@settings(max_examples=60, deadline=None)
@given(st.lists(users(), max_size=12), st.lists(users(), max_size=4))
def test_encode_decode_keeps_every_count(population: list[UserState], gone: list[UserState]) -> None:
    totals = totals_of(population + gone, [SourceOutcomes(3, invalid=2, future=1)])
    for user in gone:  # leaves zero entries behind, as updates do
        totals.add_user(user, -1)
    decoded = AdoptionTotals.decode(totals.encode())
    assert same(decoded, totals_of(population, [SourceOutcomes(3, invalid=2, future=1)]))
    assert {k: v for k, v in totals.outcomes.items() if v} == dict(decoded.outcomes)
    for name, hist in totals.ttfu.items():
        assert decoded.ttfu[name] == hist


@settings(max_examples=80, deadline=None)
@given(users())
def test_a_summary_contributes_what_the_whole_state_does(user: UserState) -> None:
    for sign in (1, -1):
        whole, summary = AdoptionTotals(), AdoptionTotals()
        whole.add_user(UserState.decode(user.encode()), sign)
        summary.add_user(decode_summary(user.encode()), sign)
        assert whole == summary


def test_a_summary_refuses_another_state_version() -> None:
    with pytest.raises(ValueError, match="version"):
        decode_summary(b"[3,null,null,0,0,{},{},{},0,[],{}]")


def test_ttfu_sums_beyond_64_bits_survive() -> None:
    totals = AdoptionTotals()
    totals.ttfu["search"].observe(2**70, 1)
    assert AdoptionTotals.decode(totals.encode()).ttfu["search"].sum_ns == 2**70


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        AdoptionTotals.decode(b"[9,{},{},[],[],[],[],{}]")
    with pytest.raises(ValueError, match="version"):  # a snapshot of version 1: the totals are derived
        AdoptionTotals.decode(b"[1,{},{},[],[],[],[],{}]")


State = UserState | SourceOutcomes


def _save(store: RocksStore | MemoryStore, states: dict[bytes, State], offset: int) -> None:
    store.save(list(states), [s.encode() for s in states.values()], offset)


def test_snapshot_is_used_only_while_it_matches_the_stored_offset(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = RocksStore(path)
    assert store.totals_snapshot() == AdoptionTotals().encode()  # empty: zero, brought along a restore
    _save(store, {user_key("a"): UserState(accepted=1)}, 4)
    snapshot = AdoptionTotals()
    snapshot.outcomes["accepted"] = 1
    store.close(snapshot.encode)
    store = RocksStore(path)
    assert store.totals_snapshot() == snapshot.encode()
    assert [k for k, _ in store.states()] == [user_key("a")]  # the snapshot is not a state
    assert [(k, s.accepted) for k, s in store.summaries()] == [(user_key("a"), 1)]
    _save(store, {user_key("b"): UserState(accepted=1)}, 5)
    assert store.totals_snapshot() is None  # the states moved on without it
    store.close()  # closed without totals (e.g. after a failed batch): the old snapshot stays stale
    store = RocksStore(path)
    try:
        assert store.changelog_offset == 5 and store.totals_snapshot() is None
        store._flush_at = 0.0  # the flush interval has passed: the next flush carries a snapshot
        _save(store, {user_key("c"): UserState(accepted=1)}, 6)
        store.maybe_flush(snapshot.encode)
        assert store.totals_snapshot() == snapshot.encode()
    finally:
        store.close()
    assert MemoryStore().totals_snapshot() is None


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefgh"), users(), max_size=6),
    st.lists(st.dictionaries(st.sampled_from("defghijk"), users(), max_size=6), max_size=3),
)
def test_snapshot_plus_tail_equals_totals_derived_again(
    stored: dict[str, UserState], tail: list[dict[str, UserState]]
) -> None:
    store = MemoryStore()  # replace_in_totals reads the old values through the store protocol
    first: dict[bytes, State] = {user_key(u): s for u, s in stored.items()}
    first[source_key(0)] = SourceOutcomes(7, invalid=1)
    _save(store, first, 10)
    totals = AdoptionTotals.decode(totals_of(stored.values(), [SourceOutcomes(7, invalid=1)]).encode())
    for i, chunk in enumerate(tail):
        values = {user_key(u): s.encode() for u, s in chunk.items()}
        values[source_key(0)] = SourceOutcomes(20 + i, invalid=2 + i, future=i).encode()
        replace_in_totals(totals, store, values)
        store.save_raw(values, 11 + i)
    derived = AdoptionTotals()
    for _, state in store.states():
        if isinstance(state, UserState):
            derived.add_user(state)
        else:
            derived.add_source(state)
    assert same(totals, derived)


@pytest.mark.parametrize("raw", [b"3 [9,{},{},[],[],[],[],{}]", b"3 not json", b"x [1]"])
def test_an_unreadable_snapshot_leaves_the_totals_to_be_derived(tmp_path: Path, raw: bytes) -> None:
    store = RocksStore(tmp_path / "db")
    try:
        _save(store, {user_key("a"): UserState(accepted=1)}, 3)
        store._db.put(store_module._TOTALS_KEY, raw)
        assert _snapshot_of(0, store) is None
    finally:
        store.close()
