"""Per-user state: serialization round trips (incl. integers beyond 64 bits) and the dedup window."""

from __future__ import annotations

import model
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adoptstream.core import codec
from adoptstream.core.events import Event, Outcome, parse_event
from adoptstream.core.state import (
    DEDUP_WINDOW_MS,
    EXPOSURE_COHORT,
    USES,
    SourceOutcomes,
    UserState,
    feature_state,
)
from adoptstream.core.totals import AdoptionTotals, totals_of

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
NOW_MS = 1_717_000_000_000
PRE_1677_NS = parse_event(
    b'{"event_id":"s","user_id":"u","type":"signup","ts":"1600-06-01T12:00:00.123456789+01:00"}'
).ts_ns


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
        assert user.apply(ev, NOW_MS + i, src_partition=3, src_offset=10 + i) is Outcome.ACCEPTED
    assert user.apply(events[0], NOW_MS + 9, src_partition=7, src_offset=2) is Outcome.DUPLICATE
    blob = user.encode()
    assert blob[:1] == b"J"  # orjson cannot write the wide integers: stdlib json fallback
    back = UserState.decode(blob)
    assert back == user
    assert back.signup_cohort == "Welle 2 ü/東京"
    assert back.features["a/b:c-1_2"][EXPOSURE_COHORT] == "ring ☃"
    assert back.sources == {3: 13, 7: 2}
    assert back.is_replay(3, 13) and not back.is_replay(3, 14) and back.is_replay(7, 0)
    assert _flat(totals_of([back])) == _flat(totals_of([user]))
    # ttfu of '*' spans ~4 centuries: exact in ns
    assert totals_of([back]).ttfu["*"].sum_ns == 0  # earliest use (pre-1677) == signup -> 0
    assert totals_of([back]).ttfu["a/b:c-1_2"].sum_ns == 1_717_000_000_123_456_789 - (PRE_1677_NS - 1)


def test_round_trip_plain_state_uses_orjson() -> None:
    user = UserState()
    user.apply(Event("e", "ü", "exposure", "f", 1_700_000_000_000_000_000, "ü-c"), NOW_MS, 0, 0)
    blob = user.encode()
    assert blob[:1] != b"J"
    orjson.loads(blob)  # plain orjson JSON
    assert UserState.decode(blob) == user


def test_empty_state_round_trip() -> None:
    assert UserState.decode(UserState().encode()) == UserState()


def test_unknown_version_is_refused() -> None:
    blob = orjson.dumps([99, None, None, 0, 0, {}, {}, []])
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
    assert src.apply(Outcome.INVALID, 0)
    assert src.apply(Outcome.FUTURE, 5)
    assert not src.apply(Outcome.INVALID, 5)  # replay
    assert not src.apply(Outcome.FUTURE, 1)  # replay
    assert (src.invalid, src.future, src.last_offset) == (1, 1, 5)
    assert SourceOutcomes.decode(src.encode()) == src


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
        if not user.is_replay(part, off):
            user.apply(ev, NOW_MS, part, off)
    back = UserState.decode(user.encode())
    assert back == user
    for i, ev in enumerate(more):
        assert back.apply(ev, NOW_MS, 9, i) is user.apply(ev, NOW_MS, 9, i)
    assert back == user
    assert UserState.decode(back.encode()) == back
    assert _flat(totals_of([back])) == _flat(totals_of([user]))


def test_feature_state_fields_survive() -> None:
    user = UserState(
        signup_ns=-(2**70),
        signup_cohort=None,
        features={"f": feature_state(None, None, 5, 9, 2), "g": feature_state(2**65, "c", None, None, 0)},
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
    user.apply(_ev("old"), NOW_MS - age_ms)
    user.apply(_ev("new"), NOW_MS)
    user.prune_seen()
    assert "old" in user.seen
    # a duplicate arriving now is still recognised, and counted once more as duplicate only
    assert user.apply(_ev("old"), NOW_MS) is Outcome.DUPLICATE
    assert (user.accepted, user.duplicates) == (2, 1)


def test_prune_forgets_beyond_the_window() -> None:
    user = UserState()
    user.apply(_ev("ancient"), NOW_MS - DEDUP_WINDOW_MS - 1)
    user.apply(_ev("edge"), NOW_MS - DEDUP_WINDOW_MS)
    user.apply(_ev("new"), NOW_MS)
    user.prune_seen()
    assert set(user.seen) == {"edge", "new"}
    # the counts are untouched by pruning: only the dedup memory shrinks
    assert (user.accepted, user.duplicates, user.features["f"][USES]) == (3, 0, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4 * DAY_MS), min_size=1, max_size=20))
def test_prune_property(ages_ms: list[int]) -> None:
    """After pruning, every id accepted within 24 h of the latest arrival is still remembered."""
    user = UserState()
    for i, age in enumerate(ages_ms):
        user.apply(_ev(f"e{i}"), NOW_MS - age)
    latest = NOW_MS - min(ages_ms)
    user.prune_seen()
    for i, age in enumerate(ages_ms):
        if latest - (NOW_MS - age) <= DAY_MS:
            assert f"e{i}" in user.seen
    assert all(latest - v <= DEDUP_WINDOW_MS for v in user.seen.values()) or len(ages_ms) == 1
    assert UserState.decode(user.encode()) == user
