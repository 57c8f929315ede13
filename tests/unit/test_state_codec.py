"""Per-user state: serialization round trips (incl. integers beyond 64 bits) and the dedup window."""

from __future__ import annotations

import model
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adoptstream.core import codec
from adoptstream.core.entries import InvalidEntry, event_entry
from adoptstream.core.events import Event, Outcome, parse_event
from adoptstream.core.state import DEDUP_WINDOW_MS, FeatureState, SourceOutcomes, UserState
from adoptstream.core.totals import AdoptionTotals, totals_of

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
NOW_MS = 1_717_000_000_000
PRE_1677_NS = parse_event(
    b'{"event_id":"s","user_id":"u","type":"signup","ts":"1600-06-01T12:00:00.123456789+01:00"}'
).ts_ns


def apply(
    user: UserState, event: Event, arrival_ms: int, src_partition: int = 0, src_offset: int = 0
) -> Outcome | None:
    return user.apply(event_entry(event, src_partition, src_offset, arrival_ms))


def _flat(totals: AdoptionTotals) -> dict[str, object]:
    """Totals as plain dicts without zero entries (defaultdicts grow zero keys on reads)."""
    return {
        "outcomes": {k: v for k, v in totals.outcomes.items() if v},
        "feature_users": {k: v for k, v in totals.feature_users.items() if v},
        "active": {(f, h): c for f, hs in totals.active_hours.items() for h, c in hs.items() if c},
        "exposed": {k: v for k, v in totals.exposed.items() if v},
        "adopted": {k: v for k, v in totals.adopted.items() if v},
        "ttfu": {k: (list(h.counts), h.sum_ns) for k, h in totals.ttfu.items() if h.count or h.sum_ns},
        "uses": {k: v for k, v in totals.uses.items() if v},
    }


def test_pre_1677_timestamp_is_beyond_int64_ns() -> None:
    assert PRE_1677_NS < -(2**63)
    # 1600-06-01T11:00:00.123456789Z: 11,662,923,600 s before the epoch, plus the fraction
    assert PRE_1677_NS == -11_662_923_600 * 10**9 + 123_456_789
    assert model.parse_rfc3339_ns("1600-06-01T12:00:00.123456789+01:00") == PRE_1677_NS


def test_round_trip_with_pre_1677_ts_and_unicode() -> None:
    user = UserState()
    events = [
        Event("sign-ü", "用户😀", "signup", None, PRE_1677_NS, "Welle 2 ü/東京"),
        Event("exp-1", "用户😀", "exposure", "a/b:c-1_2", PRE_1677_NS - 1, "ring ☃"),
        Event("use-1", "用户😀", "use", "a/b:c-1_2", 1_717_000_000_123_456_789, None),
        Event("use-2", "用户😀", "use", "search", PRE_1677_NS, "ignored"),
    ]
    for i, ev in enumerate(events):
        assert apply(user, ev, NOW_MS + i, src_partition=3, src_offset=10 + i) is Outcome.ACCEPTED
    assert apply(user, events[0], NOW_MS + 9, src_partition=7, src_offset=2) is Outcome.DUPLICATE
    blob = user.encode()
    assert str(PRE_1677_NS).encode() in blob  # integers beyond 64 bits written as they are
    back = UserState.decode(blob)
    assert back == user
    assert back.signup_cohort == "Welle 2 ü/東京"
    assert back.features["a/b:c-1_2"].exposure_cohort == "ring ☃"
    assert back.sources == {3: 13, 7: 2}
    assert _flat(totals_of([back])) == _flat(totals_of([user]))
    # ttfu of '*' spans ~4 centuries: exact in ns
    assert totals_of([back]).ttfu["*"].sum_ns == 0  # earliest use (pre-1677) == signup -> 0
    assert totals_of([back]).ttfu["a/b:c-1_2"].sum_ns == 1_717_000_000_123_456_789 - (PRE_1677_NS - 1)
    # replays are recognised by source coordinates, also after a round trip
    assert apply(back, events[3], NOW_MS, 3, 13) is None and apply(back, events[3], NOW_MS, 7, 0) is None
    assert apply(back, events[3], NOW_MS, 3, 14) is Outcome.DUPLICATE


def test_round_trip_plain_state_is_plain_json() -> None:
    user = UserState()
    apply(user, Event("e", "ü", "exposure", "f", 1_700_000_000_000_000_000, "ü-c"), NOW_MS)
    blob = user.encode()
    assert orjson.loads(blob)[0] == 2  # the version first
    assert UserState.decode(blob) == user


def test_version_1_states_are_migrated() -> None:
    """A changelog written before named states: positional lists, sources as pairs, wide blobs.

    The dates of the earliest and latest use are known from their times; nothing in between.
    """
    day = 86_400 * 10**9
    first, last = 19_000 * day + 5, 19_003 * day
    v1 = orjson.dumps(
        [
            1,
            5,
            "c",
            3,
            1,
            {"f": [7, None, first, last, 2], "g": [8, "w", None, None, 0]},
            {"e": 4},
            [[0, 12], [3, 4]],
            2,
        ]
    )
    user = UserState.decode(v1)
    assert user == UserState(
        signup_ns=5,
        signup_cohort="c",
        accepted=3,
        duplicates=1,
        features={"f": FeatureState(7, None, first, last, 2, [19_000, 19_003]), "g": FeatureState(8, "w")},
        seen={"e": 4},
        sources={0: 12, 3: 4},
        future=2,
        use_days=[19_000, 19_003],
    )
    wide = b"J" + orjson.dumps([1, None, None, 1, 0, {"f": [None, None, 1, 1, 1]}, {}, [], 0]).replace(
        b"[null,null,1,1,1]", f"[null,null,{-(2**70)},1,1]".encode()
    )
    assert UserState.decode(wide).features["f"].first_use_ns == -(2**70)
    assert UserState.decode(UserState.decode(v1).encode()) == user  # written back as version 2


@pytest.mark.parametrize(
    "blob",
    [orjson.dumps([99, None, None, 0, 0, {}, {}, []]), orjson.dumps([99, None, None, 0, 0, {}, {}, {}])],
)
def test_unknown_version_is_refused(blob: bytes) -> None:
    with pytest.raises(ValueError):
        UserState.decode(blob)


@pytest.mark.parametrize(
    "value",
    [2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**40, -(10**40), PRE_1677_NS],
)
def test_codec_integers_at_and_beyond_64_bits(value: int) -> None:
    obj = [value, {"k": value}, "ü"]
    assert codec.loads(codec.dumps(obj)) == obj


def test_source_outcomes_round_trip_and_replay() -> None:
    src = SourceOutcomes()
    assert src.apply(InvalidEntry(0, 0, NOW_MS))
    assert src.apply(InvalidEntry(0, 5, NOW_MS))
    assert not src.apply(InvalidEntry(0, 5, NOW_MS))  # replay
    assert not src.apply(InvalidEntry(0, 1, NOW_MS))  # replay
    assert (src.invalid, src.future, src.last_offset) == (2, 0, 5)
    assert SourceOutcomes.decode(src.encode()) == src
    assert SourceOutcomes.decode(b"[7,2,1]") == SourceOutcomes(7, 2, 1)  # as version 1 wrote it


_ts = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**66),
    st.sampled_from([PRE_1677_NS, -(2**63), 2**63 - 1, 2**64, 0]),
)
_events = st.builds(
    Event,
    event_id=st.text(min_size=1, max_size=4),
    user_id=st.just("u"),
    type=st.sampled_from(["signup", "exposure", "use"]),
    feature=st.sampled_from(["f", "g", "ü-is-not-valid-but-state-does-not-care"]),
    ts_ns=_ts,
    cohort=st.one_of(st.none(), st.text(min_size=1, max_size=5)),
).map(
    lambda e: Event(
        e.event_id, e.user_id, e.type, None if e.type == "signup" else e.feature, e.ts_ns, e.cohort
    )
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_events, st.integers(0, 3), st.integers(0, 2**40)), max_size=12),
    st.lists(_events, max_size=4),
)
def test_round_trip_property(applied: list[tuple[Event, int, int]], more: list[Event]) -> None:
    """decode(encode(s)) == s, and the decoded state behaves exactly like the original afterwards."""
    user = UserState()
    for ev, part, off in applied:
        apply(user, ev, NOW_MS, part, off)
    back = UserState.decode(user.encode())
    assert back == user
    for i, ev in enumerate(more):
        assert apply(back, ev, NOW_MS, 9, i) is apply(user, ev, NOW_MS, 9, i)
    assert back == user
    assert UserState.decode(back.encode()) == back
    assert _flat(totals_of([back])) == _flat(totals_of([user]))


def test_feature_state_fields_survive() -> None:
    user = UserState(
        signup_ns=-(2**70),
        signup_cohort=None,
        features={"f": FeatureState(None, None, 5, 9, 2), "g": FeatureState(2**65, "c", None, None, 0)},
        accepted=3,
        duplicates=4,
        seen={"a": 1, "ü": 2},
        sources={0: 1, 12: 2**40},
    )
    assert UserState.decode(user.encode()) == user


# -- dedup window: "already accepted within at least the last 24 hours of arrivals" -----------------


def _ev(event_id: str) -> Event:
    return Event(event_id, "u", "use", "f", 1_700_000_000_000_000_000, None)


def test_dedup_window_is_at_least_24h() -> None:
    assert DEDUP_WINDOW_MS >= DAY_MS


@pytest.mark.parametrize("age_ms", [0, 1, HOUR_MS, DAY_MS - 1, DAY_MS, DEDUP_WINDOW_MS])
def test_prune_keeps_at_least_24h_of_arrivals(age_ms: int) -> None:
    user = UserState()
    apply(user, _ev("old"), NOW_MS - age_ms, 0, 0)
    apply(user, _ev("new"), NOW_MS, 0, 1)
    user.prune_seen()
    assert "old" in user.seen
    # a duplicate arriving now is still recognised, and counted once more as duplicate only
    assert apply(user, _ev("old"), NOW_MS, 0, 2) is Outcome.DUPLICATE
    assert (user.accepted, user.duplicates) == (2, 1)


def test_prune_forgets_beyond_the_window() -> None:
    user = UserState()
    apply(user, _ev("ancient"), NOW_MS - DEDUP_WINDOW_MS - 1, 0, 0)
    apply(user, _ev("edge"), NOW_MS - DEDUP_WINDOW_MS, 0, 1)
    apply(user, _ev("new"), NOW_MS, 0, 2)
    user.prune_seen()
    assert set(user.seen) == {"edge", "new"}
    # the counts are untouched by pruning: only the dedup memory shrinks
    assert (user.accepted, user.duplicates, user.features["f"].uses) == (3, 0, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4 * DAY_MS), min_size=1, max_size=20))
def test_prune_property(ages_ms: list[int]) -> None:
    """After pruning, every id accepted within 24 h of the latest arrival is still remembered."""
    user = UserState()
    for i, age in enumerate(ages_ms):
        apply(user, _ev(f"e{i}"), NOW_MS - age, 0, i)
    latest = NOW_MS - min(ages_ms)
    user.prune_seen()
    for i, age in enumerate(ages_ms):
        if latest - (NOW_MS - age) <= DAY_MS:
            assert f"e{i}" in user.seen
    assert all(latest - v <= DEDUP_WINDOW_MS for v in user.seen.values()) or len(ages_ms) == 1
    assert UserState.decode(user.encode()) == user
