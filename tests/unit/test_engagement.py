"""Section 3 through the real stages, on hand-computed cases: periods, midnight, history, caps, rollover."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline import Pipeline, coords_of, flat, scrape
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import RestrictedRegistry

from adoptstream.core.entries import AnswerEntry, EventEntry
from adoptstream.core.state import DAY_NS, USE_DAYS_KEPT, UserState
from adoptstream.core.totals import TOTALS_DAYS_KEPT, AdoptionTotals
from adoptstream.exposition.collector import OVERFLOW, AdoptionCollector
from adoptstream.exposition.engagement import EngagementCollector

MS = 1_000_000
MINUTE = 60_000 * MS
MIDNIGHT = 19_876 * DAY_NS  # a UTC midnight (2024-06-02)
D = MIDNIGHT // DAY_NS - 1  # the date before it


def msg(user: str, eid: str, etype: str, ts_ns: int, **fields: object) -> bytes:
    obj: dict[str, object] = {"event_id": eid, "user_id": user, "type": etype, "ts": ts_ns // MS}
    if etype in ("use", "exposure") and "feature" not in fields:
        obj["feature"] = "f"
    obj.update(fields)
    return json.dumps(obj).encode()


def at(day: int, minute: int = 12 * 60) -> int:
    """ns of a minute of a date."""
    return day * DAY_NS + minute * MINUTE


def pipeline(raws: list[bytes], now_ns: int, parts: int = 2) -> Pipeline:
    pipe = Pipeline(parts, now_ns)
    pipe.ingest(coords_of([0] * len(raws)), raws, now_ns)
    pipe.process()
    return pipe


def g(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def active_days(samples: dict, feature: str, period: str) -> dict[int, int]:
    n = int(period[:-1])
    counts = {
        k: int(g(samples, "adoptstream_active_days_users", feature=feature, period=period, days=str(k)))
        for k in range(1, n + 1)
    }
    return {k: c for k, c in counts.items() if c}


def lifecycle(samples: dict, feature: str, period: str) -> dict[str, int]:
    return {
        state: int(g(samples, "adoptstream_lifecycle_users", feature=feature, period=period, state=state))
        for state in ("new", "returning", "resurrecting", "dormant")
    }


def test_lifecycle_and_active_days_by_hand() -> None:
    T = at(D, 18 * 60)
    raws = [
        msg("twice", "a", "use", at(D - 10)),  # 7d: D-10 in P (D-13..D-7); 1d: before P
        msg("twice", "b", "use", at(D)),
        msg("lapsed", "a", "use", at(D - 8)),  # 7d: dormant; 30d: new (in C, first use)
        # 7d: new (first use in C) and 3 dates
        msg("old", "a", "use", at(D - 100)),  # long ago, then today: resurrecting everywhere
        msg("old", "b", "use", at(D, 1)),
        msg("edge59", "a", "use", at(D - 59)),  # 30d: P starts at D-59: returning
        msg("edge59", "b", "use", at(D)),
        msg("edge60", "a", "use", at(D - 60)),  # 30d: before P: resurrecting
        msg("edge60", "b", "use", at(D)),
        msg("daily", "a", "use", at(D - 2)),
        msg("daily", "b", "use", at(D - 1)),
        msg("daily", "c", "use", at(D)),
        msg("daily", "d", "use", at(D, 13 * 60)),  # same date again
    ]
    s = scrape(pipeline(raws, T).totals(), T)
    assert lifecycle(s, "f", "1d") == {"new": 0, "returning": 1, "resurrecting": 4, "dormant": 0}
    assert lifecycle(s, "f", "7d") == {"new": 1, "returning": 1, "resurrecting": 3, "dormant": 1}
    assert lifecycle(s, "f", "30d") == {"new": 3, "returning": 1, "resurrecting": 2, "dormant": 0}
    assert lifecycle(s, "*", "30d") == lifecycle(s, "f", "30d")
    assert active_days(s, "f", "7d") == {1: 4, 3: 1}  # lapsed: D-8 is not in C; twice: only D
    assert active_days(s, "f", "30d") == {1: 4, 2: 1, 3: 1}  # twice: D-10 and D


def test_an_event_dated_after_d_counts_as_dated_d() -> None:
    """Uses dated D and D + 1 (within the 5-minute tolerance) are one date of C, until midnight."""
    now = MIDNIGHT - MINUTE
    raws = [
        msg("u", "a", "use", MIDNIGHT - 30 * MINUTE),
        msg("u", "b", "use", MIDNIGHT + 2 * MINUTE),  # dated D + 1, not future
        msg("v", "a", "use", MIDNIGHT + 3 * MINUTE),  # only D + 1: one date
        msg("w", "a", "use", at(D - 1)),
        msg("w", "b", "use", MIDNIGHT - MINUTE),
        msg("w", "c", "use", MIDNIGHT + MINUTE),
    ]
    pipe = pipeline(raws, now)
    before = scrape(pipe.totals(), now)
    assert active_days(before, "f", "7d") == {1: 2, 2: 1}
    assert active_days(before, "*", "30d") == {1: 2, 2: 1}
    assert lifecycle(before, "f", "1d") == {"new": 2, "returning": 1, "resurrecting": 0, "dormant": 0}
    after = MIDNIGHT + 4 * MINUTE  # D + 1 is now D: u has two dates, w three
    for part in pipe.parts:
        part.totals.advance(after // DAY_NS)  # the state stage's turn of the day
    s = scrape(pipe.totals(), after)
    assert active_days(s, "f", "7d") == {1: 1, 2: 1, 3: 1}
    assert lifecycle(s, "f", "1d") == {"new": 1, "returning": 2, "resurrecting": 0, "dormant": 0}
    # and again a day later: nobody used anything on the new date
    s = scrape(pipe.totals(), after + DAY_NS)
    assert lifecycle(s, "f", "1d") == {"new": 0, "returning": 0, "resurrecting": 0, "dormant": 3}


def test_feedback_latest_answer_and_ties() -> None:
    T = at(D, 18 * 60)
    raws = [
        msg("u", "a", "feedback", at(D - 5), scale="nps", score=9, feature="f"),
        msg("u", "b", "feedback", at(D - 1), scale="nps", score=9),  # about the product: '*' only
        msg("u", "c", "feedback", at(D - 1), scale="nps", score=3),  # tie on ts: the lower counts
        msg("v", "a", "feedback", at(D - 40), scale="csat", score=5, feature="g"),  # 90d, not 30d
        msg("v", "b", "feedback", at(D - 50), scale="csat", score=1, feature="g"),  # older: not latest
        msg("w", "a", "feedback", at(D - 95), scale="ces", score=2),  # outside both periods
    ]
    s = scrape(pipeline(raws, T).totals(), T)

    def scores(feature: str, scale: str, period: str) -> dict[int, int]:
        out = {}
        for (name, labels), value in s.items():
            lab = dict(labels)
            if name == "adoptstream_feedback_users" and (lab["feature"], lab["scale"], lab["period"]) == (
                feature,
                scale,
                period,
            ):
                out[int(lab["score"])] = int(value)
        return out

    assert scores("*", "nps", "30d") == {**dict.fromkeys(range(11), 0), 3: 1}
    assert scores("f", "nps", "30d") == {**dict.fromkeys(range(11), 0), 9: 1}
    assert scores("g", "csat", "30d") == dict.fromkeys(range(1, 6), 0)
    assert scores("g", "csat", "90d") == {**dict.fromkeys(range(1, 6), 0), 5: 1}
    assert scores("*", "ces", "90d") == dict.fromkeys(range(1, 8), 0)  # present, all 0
    assert scores("f", "csat", "30d") == {}  # (f, csat) never answered: absent
    # a feature named only by answers has the features' series (0)
    assert g(s, "adoptstream_active_users", feature="g", window="30d") == 0
    assert lifecycle(s, "g", "7d") == dict.fromkeys(("new", "returning", "resurrecting", "dormant"), 0)


def test_task_durations_at_bucket_edges() -> None:
    T = at(D)
    durations = [0, 500, 501, 1_000, 3_600_000, 3_600_001, 86_400_000]
    raws = [msg("u", f"e{i}", "use", at(D - 1), duration_ms=d) for i, d in enumerate(durations)]
    raws.append(msg("v", "x", "use", at(D - 1), feature="g", duration_ms=2_000))
    raws.append(msg("v", "y", "use", at(D - 1), feature="h"))  # no duration: present, empty
    s = scrape(pipeline(raws, T).totals(), T)

    def bucket(feature: str, le: str) -> float:
        return g(s, "adoptstream_task_duration_seconds_bucket", feature=feature, le=le)

    assert [bucket("f", le) for le in ("0.5", "1.0", "2.0", "3600.0", "+Inf")] == [2, 4, 4, 5, 7]
    assert g(s, "adoptstream_task_duration_seconds_sum", feature="f") == sum(durations) / 1000
    assert bucket("*", "2.0") == 5 and bucket("*", "+Inf") == 8
    assert bucket("h", "+Inf") == 0 and g(s, "adoptstream_task_duration_seconds_count", feature="h") == 0


def test_signups_by_date_of_the_earliest() -> None:
    T = at(D)
    raws = [
        msg("u", "a", "signup", at(D - 3)),
        msg("u", "b", "signup", at(D - 40)),  # earlier: u signed up 40 days ago
        msg("v", "a", "signup", at(D)),
        msg("w", "a", "signup", at(D - 6)),
    ]
    s = scrape(pipeline(raws, T).totals(), T)
    got = {p: g(s, "adoptstream_signed_up_users", period=p) for p in ("1d", "7d", "30d")}
    assert got == {"1d": 1, "7d": 2, "30d": 2}


def test_state_keeps_recent_dates_only_and_stays_exact() -> None:
    """A daily user for 200 days: the state holds ~61 dates; every period is still exact."""
    T = at(D, 18 * 60)
    raws = [msg("u", f"e{i}", "use", at(D - i)) for i in range(200)]
    pipe = pipeline(raws, T, parts=1)
    (state,) = (UserState.decode(v) for k, v in pipe.parts[0].store.encoded().items() if k[:1] == b"u")
    assert state.features["f"].use_days == list(range(D - USE_DAYS_KEPT, D + 1))
    s = scrape(pipe.totals(), T)
    assert active_days(s, "f", "30d") == {30: 1}
    assert lifecycle(s, "f", "30d") == {"new": 0, "returning": 1, "resurrecting": 0, "dormant": 0}


def test_rollover_drops_only_what_no_period_reaches() -> None:
    T = at(D)
    raws = [msg(f"u{i}", "a", "use", at(D - 3 * i)) for i in range(60)]
    raws += [msg(f"u{i}", "s", "signup", at(D - 3 * i)) for i in range(60)]
    raws += [msg(f"u{i}", "q", "feedback", at(D - 3 * i), scale="nps", score=i % 11) for i in range(60)]
    pipe = pipeline(raws, T)
    for days_later in (1, 20, 45, 95):
        t = T + days_later * DAY_NS
        before = scrape(pipe.totals(), t)
        pipe.set_state_clock(t)
        for part in pipe.parts:
            part.totals.advance(part.today)
            assert all(day >= t // DAY_NS - TOTALS_DAYS_KEPT for day in part.totals.signup_days.counts)
        assert scrape(pipe.totals(), t) == before
        assert flat(pipe.merged()) == flat(pipe.derived())  # derived with the same floor
    assert not any(part.totals.signup_days.counts for part in pipe.parts)  # 95 days on: nothing left


def test_label_cap_folds_features_in_every_family() -> None:
    T = at(D)
    raws = [msg(f"u{i}", "a", "use", at(D), feature=f"f{i}", duration_ms=1) for i in range(4)]
    raws += [msg("u0", "b", "feedback", at(D), feature="f3", scale="ces", score=2)]
    totals = pipeline(raws, T).merged()

    class Source:
        def merged_totals(self) -> AdoptionTotals:
            return totals

        def partition_totals(self) -> list[AdoptionTotals]:
            return [totals]

    registry = CollectorRegistry()
    adoption = AdoptionCollector(Source(), max_features=2, max_cohorts=5, clock_ns=lambda: T)
    registry.register(adoption)
    registry.register(EngagementCollector(Source(), adoption.features, clock_ns=lambda: T))
    s = {(x.name, tuple(sorted(x.labels.items()))): x.value for m in registry.collect() for x in m.samples}
    assert g(s, "adoptstream_lifecycle_users", feature=OVERFLOW, period="1d", state="new") == 2
    assert g(s, "adoptstream_task_duration_seconds_count", feature=OVERFLOW) == 2
    assert g(s, "adoptstream_task_duration_seconds_count", feature="*") == 4
    assert g(s, "adoptstream_feedback_users", feature=OVERFLOW, scale="ces", period="30d", score="2") == 1
    features = {dict(k[1]).get("feature") for k in s if k[0] == "adoptstream_active_days_users"}
    assert features == {"*", "f0", "f1", OVERFLOW}


def test_collector_describes_what_it_yields_and_filters_by_name() -> None:
    totals = pipeline([msg("u", "a", "use", at(D))], at(D)).merged()

    class Source:
        def merged_totals(self) -> AdoptionTotals:
            return totals

        def partition_totals(self) -> list[AdoptionTotals]:
            return [totals]

    adoption = AdoptionCollector(Source(), 10, 10, clock_ns=lambda: at(D))
    collector = EngagementCollector(Source(), adoption.features, clock_ns=lambda: at(D))
    described = {m.name: m.type for m in collector.describe()}
    yielded = {m.name: m.type for m in collector.collect()}
    assert described == yielded and len(yielded) == 5
    registry = CollectorRegistry()
    registry.register(collector)
    only = RestrictedRegistry(["adoptstream_signed_up_users"], registry)
    text = generate_latest(only).decode()  # the library's own name[] filtering
    assert "adoptstream_signed_up_users{" in text and "lifecycle" not in text


@pytest.mark.parametrize("parts", [1, 3])
def test_several_workers_sum_to_the_truth(parts: int) -> None:
    """Each by-user partition's totals alone, summed: what `sum without (instance)` does."""
    T = at(D, 18 * 60)
    raws = [msg(f"u{i % 7}", f"e{i}", "use", at(D - (i * 5) % 40), feature=f"f{i % 3}") for i in range(80)]
    pipe = pipeline(raws, T, parts)
    whole = scrape(pipe.merged(), T)  # section 3 from all the counts at once
    summed: dict = {}
    for part in pipe.parts:
        for key, value in scrape(part.totals, T).items():
            summed[key] = summed.get(key, 0) + value
    assert {k: v for k, v in summed.items() if k in whole} == whole


_histories = st.lists(
    st.lists(st.integers(-70, 3), min_size=1, max_size=8),  # days of use relative to a base date
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    _histories, st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0, 1, 1, 2, 7, 40, 150])), max_size=8)
)
def test_live_answers_equal_answers_from_all_the_counts(
    histories: list[list[int]], steps: list[tuple[int, int]]
) -> None:
    """The answers kept up to date as users come and go, and slid at each day turn (several days at
    once, or so far that they are computed again), equal the answers computed from every count."""
    base = D - 3
    users = []
    for i, rel_days in enumerate(histories):
        user = UserState()
        for j, rel in enumerate(rel_days):
            ts = at(base + rel, (j * 37) % 1440)
            user.apply(EventEntry(0, j, 0, f"u{i}", f"e{j}", "use", "f", ts, None))
            # and a signup or an answer on a date further back
            back = (0, 7, 27, 60, 87)[(i + j) % 5]
            fields = (0, 100 + j, 0, f"u{i}", f"x{j}")
            if j % 2:
                answer = ("feedback", "f", at(base + rel - back), None, "csat", 1 + (i + j) % 5)
                user.apply(AnswerEntry(*fields, *answer))
            else:
                user.apply(EventEntry(*fields, "signup", None, at(base + rel - back), None))
        users.append(user)
    today = base
    totals = AdoptionTotals()
    totals.advance(today)
    present: list[UserState] = []
    for n, (what, days) in enumerate(steps + [(0, 0)] * len(users)):
        if what == 0 and n < len(users):
            totals.add_user(users[n])
            present.append(users[n])
        elif what == 1 and present:
            totals.add_user(present.pop(), -1)
        else:
            today += days
            totals.advance(today)
        for feature in ("f", "*"):
            dates = totals.use_dates.get(feature)
            if dates is None:
                continue
            for day in (today, today + 1, today + 3):  # live, and slid copies (a scrape ahead)
                assert dates.engagement(day) == dates._computed(day).engagement(), (feature, day)
        for dated in (totals.signup_days, *totals.answer_days.values()):
            for day in (today, today + 1, today + 3):
                assert dated.at(day) == dated._computed(day)
