"""Hand-checked examples of the reference model's section 3 (CONTRACT v2), and the model on the v2
strategies' scenarios.

Every expected number in the examples is worked out by hand in the test from the contract's words,
not by the model: they are what makes the model a yardstick for the implementation. The generated
scenarios check what needs no hand: the model is order-free, its families agree with each other,
and the strategies reach every edge.
"""

from __future__ import annotations

import json

import model
import pytest
import strategies
from hypothesis import HealthCheck, given, settings

NS = 1_000_000_000
MS = 1_000_000
HOUR = 3_600 * NS
DAY = 24 * HOUR
D = 19_875  # 2024-06-01, the UTC date of T in most examples
MIDNIGHT = D * DAY  # 2024-06-01T00:00:00Z
T = MIDNIGHT + 12 * HOUR  # noon of D


def at(days_ago: int, hour: int = 12) -> int:
    """ts_ns on the date D - days_ago, at `hour` UTC."""
    return MIDNIGHT - days_ago * DAY + hour * HOUR


def first_ns(days_ago: int) -> int:
    return MIDNIGHT - days_ago * DAY


def last_ms(days_ago: int) -> int:
    """The last whole millisecond of the date D - days_ago."""
    return MIDNIGHT - (days_ago - 1) * DAY - MS


_ids = iter(range(10**9))


def msg(user: str, etype: str, ts_ns: int, **fields: object) -> bytes:
    obj: dict[str, object] = {"event_id": f"e{next(_ids)}", "user_id": user, "type": etype, "ts": ts_ns // MS}
    obj.update(fields)
    return json.dumps(obj).encode()


def use(user: str, ts_ns: int, feature: str = "f", **fields: object) -> bytes:
    return msg(user, "use", ts_ns, feature=feature, **fields)


def answer(user: str, ts_ns: int, scale: str, score: int, feature: str | None = None) -> bytes:
    fields: dict[str, object] = {"scale": scale, "score": score}
    if feature is not None:
        fields["feature"] = feature
    return msg(user, "feedback", ts_ns, **fields)


def samples(raws: list[bytes], scrape_ns: int = T, now_ns: int | None = None) -> dict[model.SampleKey, float]:
    return model.expected_samples(list(enumerate(raws)), scrape_ns if now_ns is None else now_ns, scrape_ns)


def k(name: str, **labels: str) -> model.SampleKey:
    return name, tuple(sorted(labels.items()))


def family(
    s: dict[model.SampleKey, float], name: str, **fixed: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one name whose labels include `fixed`, keyed by their other labels."""
    out = {}
    for (n, labels), v in s.items():
        d = dict(labels)
        if n == name and all(d.get(a) == b for a, b in fixed.items()):
            out[tuple((a, b) for a, b in labels if a not in fixed)] = v
    return out


def lifecycle(s: dict[model.SampleKey, float], feature: str, period: str) -> tuple[float, ...]:
    return tuple(
        s[k("adoptstream_lifecycle_users", feature=feature, period=period, state=state)]
        for state in ("new", "returning", "resurrecting", "dormant")
    )


def active_days(s: dict[model.SampleKey, float], feature: str, period: str) -> dict[int, float]:
    """days -> users, only the non-zero ones (all of 1..N must be present)."""
    n = int(period[:-1])
    got = {
        d: s[k("adoptstream_active_days_users", feature=feature, period=period, days=str(d))]
        for d in range(1, n + 1)
    }
    assert len(family(s, "adoptstream_active_days_users", feature=feature, period=period)) == n
    return {d: v for d, v in got.items() if v}


# -- 3.3 lifecycle ---------------------------------------------------------------------------------


def test_lifecycle_states_for_each_period() -> None:
    # dates of use (days before D) of feature f; 1d: C={0} P={1}; 7d: C=0..6 P=7..13; 30d: C=0..29 P=30..59
    uses_of_f = {
        "new": [0],  # 1d new, 7d new, 30d new
        "ret": [0, 1],  # 1d returning, 7d new, 30d new
        "res": [0, 3],  # 1d resurrecting, 7d new, 30d new
        "dorm": [1],  # 1d dormant, 7d new, 30d new
        "ret7": [2, 9],  # 1d -, 7d returning, 30d new
        "old": [10, 40],  # 1d -, 7d dormant, 30d returning
        "res30": [5, 65],  # 1d -, 7d resurrecting, 30d resurrecting
        "gone": [8, 70],  # 1d -, 7d dormant, 30d resurrecting
        "p30": [45],  # 1d -, 7d -, 30d dormant
        "ancient": [100],  # nothing for f; with its use of g today, resurrecting for * in every period
    }
    raws = [use(u, at(d, hour=d % 24)) for u, days in uses_of_f.items() for d in days]
    raws.append(use("ancient", at(0), feature="g"))
    raws.append(msg("signed", "signup", at(0)))  # a user without uses is in no state
    s = samples(raws)
    assert lifecycle(s, "f", "1d") == (1, 1, 1, 1)
    assert lifecycle(s, "f", "7d") == (4, 1, 1, 2)
    assert lifecycle(s, "f", "30d") == (5, 1, 2, 1)
    assert lifecycle(s, "g", "1d") == lifecycle(s, "g", "7d") == lifecycle(s, "g", "30d") == (1, 0, 0, 0)
    assert lifecycle(s, "*", "1d") == (1, 1, 2, 1)
    assert lifecycle(s, "*", "7d") == (4, 1, 2, 2)
    assert lifecycle(s, "*", "30d") == (5, 1, 3, 1)


def test_lifecycle_period_edges_are_dates_not_hours() -> None:
    # 7d: C starts at the first ns of D-6, P at the first ns of D-13
    raws = [
        use("c-first", first_ns(6)),  # in C: new
        use("p-last", last_ms(7)),  # last ms of D-7: in P: dormant
        use("p-first", first_ns(13)),  # first ns of D-13: in P: dormant
        use("before-p", last_ms(14)),  # before P: no state
        use("res", last_ms(14)),
        use("res", first_ns(0)),  # in C, not in P, before P: resurrecting
        use("ret", first_ns(13)),
        use("ret", first_ns(0) + MS),  # in C and P: returning
    ]
    s = samples(raws, scrape_ns=MIDNIGHT)  # T exactly at 00:00 of D
    assert lifecycle(s, "f", "7d") == (1, 1, 1, 2)
    s = samples(raws, scrape_ns=MIDNIGHT - 1)  # 1 ns earlier: D-1 is today, every period one date back
    # C = D-7..D-1, P = D-14..D-8: c-first new, p-last new, p-first dormant, before-p dormant,
    # res: D-14 in P and D (after D-1, counted as D-1) in C: returning; ret: D-13 in P, D in C: returning
    assert lifecycle(s, "f", "7d") == (2, 2, 0, 2)


def test_event_dated_after_d_counts_as_d() -> None:
    """T at 23:58 of D; uses at 00:01 of D+1 are within the 5-minute tolerance and count as dated D."""
    scrape = MIDNIGHT + DAY - 2 * 60 * NS
    next_day = MIDNIGHT + DAY + 60 * NS
    raws = [
        use("a", at(0)),
        use("a", next_day),  # same date as the use at noon: one active day, not two
        use("b", next_day),  # only D+1: new in 1d
        use("c", at(1)),
        use("c", next_day),  # D-1 and "D": returning in 1d
        use("late", MIDNIGHT + DAY + 7 * 60 * NS),  # beyond the tolerance: future, counts nowhere
        msg("s", "signup", next_day),
        answer("q", at(40), "ces", 7),
        answer("q", next_day, "ces", 2),  # the latest answer, dated D: in both periods
    ]
    s = samples(raws, scrape_ns=scrape)
    assert s[k("adoptstream_events_total", outcome="future")] == 1
    assert active_days(s, "f", "7d") == {1: 2, 2: 1}  # a: 1 (merged), b: 1, c: 2
    assert active_days(s, "*", "30d") == {1: 2, 2: 1}
    assert lifecycle(s, "f", "1d") == (2, 1, 0, 0)  # new: a, b; returning: c
    assert s[k("adoptstream_signed_up_users", period="1d")] == 1
    for period in ("30d", "90d"):
        assert family(s, "adoptstream_feedback_users", feature="*", scale="ces", period=period) == {
            (("score", str(score)),): (1 if score == 2 else 0) for score in range(1, 8)
        }
    # two minutes later T is on D+1: the noon use is yesterday's, the 00:01 uses are today's
    s = samples(raws, scrape_ns=MIDNIGHT + DAY, now_ns=scrape)
    assert active_days(s, "f", "7d") == {1: 1, 2: 2}  # a: D and D+1, b: D+1, c: D-1 and D+1
    assert lifecycle(s, "f", "1d") == (1, 1, 1, 0)  # b new, a returning (D in P), c resurrecting


# -- 3.3 active days -------------------------------------------------------------------------------


def test_active_days_exactly_k() -> None:
    raws = [use("one", at(0, h)) for h in (0, 5, 23)]  # three uses on one date
    raws += [use("one", at(1), feature="g")]  # another date for * only
    raws += [use("week", first_ns(d)) for d in range(8)]  # D..D-7: 7 dates in 7d, 8 in 30d
    raws += [use("month", first_ns(0))] + [use("month", last_ms(d)) for d in range(1, 31)]  # D..D-30
    raws += [use("edges", last_ms(6)), use("edges", first_ns(29))]  # D-6 and D-29: 1 in 7d, 2 in 30d
    raws += [use("outside", at(30)), use("outside", at(31))]  # before both periods
    raws += [msg("exposed", "exposure", at(0), feature="f")]  # not a use
    s = samples(raws)
    assert active_days(s, "f", "7d") == {1: 2, 7: 2}
    assert active_days(s, "f", "30d") == {1: 1, 2: 1, 8: 1, 30: 1}
    assert active_days(s, "*", "7d") == {2: 1, 1: 1, 7: 2}  # one: D and D-1 (g)
    assert active_days(s, "*", "30d") == {2: 2, 8: 1, 30: 1}
    assert active_days(s, "g", "7d") == {1: 1}
    assert active_days(s, "g", "30d") == {1: 1}


# -- 3.3 signups -----------------------------------------------------------------------------------


def test_signed_up_users_by_earliest_signup() -> None:
    raws = [
        msg("today", "signup", first_ns(0)),
        msg("yesterday", "signup", last_ms(1)),
        msg("d6", "signup", first_ns(6)),
        msg("d7", "signup", last_ms(7)),
        msg("d29", "signup", first_ns(29)),
        msg("d30", "signup", last_ms(30)),
        msg("twice", "signup", at(40)),
        msg("twice", "signup", at(0)),  # a later signup does not move the earliest one
        msg("usesonly", "use", at(0), feature="f"),
        answer("answers", at(0), "nps", 10),
    ]
    first = b'{"event_id":"dup","user_id":"dup","type":"signup","ts":%d}' % (at(45) // MS)
    raws += [first, b'{"event_id":"dup","user_id":"dup","type":"signup","ts":%d}' % (at(0) // MS)]
    s = samples(raws)
    assert s[k("adoptstream_events_total", outcome="duplicate")] == 1
    assert s[k("adoptstream_signed_up_users", period="1d")] == 1
    assert s[k("adoptstream_signed_up_users", period="7d")] == 3
    assert s[k("adoptstream_signed_up_users", period="30d")] == 5
    assert len(family(s, "adoptstream_signed_up_users")) == 3


# -- 3.3 feedback ----------------------------------------------------------------------------------


def scores(s: dict[model.SampleKey, float], feature: str, scale: str, period: str) -> dict[int, float]:
    got = family(s, "adoptstream_feedback_users", feature=feature, scale=scale, period=period)
    return {int(dict(labels)["score"]): v for labels, v in got.items()}


def test_feedback_latest_answer_ties_and_star() -> None:
    tie = at(2)
    raws = [
        answer("u1", at(5), "csat", 2, "f"),
        answer("u1", at(1), "csat", 5, "f"),  # latest: 5
        answer("u2", tie, "csat", 4, "f"),
        answer("u2", tie, "csat", 3, "f"),  # same ts: the lower score, 3
        answer("u2", tie - MS, "csat", 1, "f"),
        answer("u3", at(40), "csat", 5, "f"),  # latest dated D-40: 90d only
        answer("u3", at(50), "csat", 1, "f"),
        answer("u4", at(100), "csat", 1, "f"),  # in no period
        answer("u5", at(10), "csat", 2, "f"),  # latest about f: 2
        answer("u5", at(3), "csat", 5),  # about the product: later, so * takes 5
        answer("u6", at(1), "csat", 4),  # no feature: only *
        msg("u6", "feedback", at(20), scale="csat", score=1, feature=None),  # null feature: only *
        answer("u7", tie, "csat", 1, "g"),
        answer("u7", tie, "csat", 5, "f"),  # f: 5, g: 1, * (tie across features): 1
        answer("u8", at(0), "nps", 9, "f"),
        answer("u9", at(89), "nps", 0),  # first date of the 90d period
        answer("u10", at(90), "nps", 10),  # one date before it
    ]
    s = samples(raws)
    zeros5 = dict.fromkeys(range(1, 6), 0)
    assert scores(s, "f", "csat", "30d") == {**zeros5, 5: 2, 3: 1, 2: 1}  # u1, u7; u2; u5
    assert scores(s, "f", "csat", "90d") == {**zeros5, 5: 3, 3: 1, 2: 1}  # and u3
    assert scores(s, "*", "csat", "30d") == {**zeros5, 5: 2, 4: 1, 3: 1, 1: 1}  # u1, u5; u6; u2; u7
    assert scores(s, "*", "csat", "90d") == {**zeros5, 5: 3, 4: 1, 3: 1, 1: 1}  # and u3
    assert scores(s, "g", "csat", "30d") == scores(s, "g", "csat", "90d") == {**zeros5, 1: 1}
    zeros11 = dict.fromkeys(range(11), 0)
    assert scores(s, "f", "nps", "30d") == scores(s, "f", "nps", "90d") == {**zeros11, 9: 1}
    assert scores(s, "*", "nps", "30d") == {**zeros11, 9: 1}
    assert scores(s, "*", "nps", "90d") == {**zeros11, 9: 1, 0: 1}
    zeros7 = dict.fromkeys(range(1, 8), 0)
    assert scores(s, "*", "ces", "30d") == scores(s, "*", "ces", "90d") == zeros7  # present, no answers
    # present for (f, csat), (f, nps), (g, csat) and every (*, scale); nothing else
    assert len(family(s, "adoptstream_feedback_users")) == 2 * (5 + 11 + 5 + 11 + 5 + 7)
    assert scores(s, "g", "nps", "30d") == {}
    assert scores(s, "f", "ces", "30d") == {}


def test_an_earlier_answer_counts_nowhere() -> None:
    raws = [answer("u", at(3), "nps", 10, "f"), answer("u", at(0, hour=11), "nps", 0, "f")]
    s = samples(raws)
    assert scores(s, "f", "nps", "30d")[10] == 0
    assert scores(s, "f", "nps", "30d")[0] == 1


# -- 3.3 task duration -----------------------------------------------------------------------------

DURATION = "adoptstream_task_duration_seconds"
LE = ("0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "900.0", "3600.0", "+Inf")


def buckets(s: dict[model.SampleKey, float], feature: str) -> list[float]:
    return [s[k(f"{DURATION}_bucket", feature=feature, le=le)] for le in LE]


def test_task_duration_bucket_edges_and_exact_sum() -> None:
    raws = [
        use("u", at(0), duration_ms=0),
        use("u", at(0), duration_ms=500),  # exactly 0.5 s: le="0.5"
        use("u", at(0), duration_ms=501),
        use("u", at(0), duration_ms=3_600_000),  # exactly 3600 s: le="3600.0"
        use("u", at(0), duration_ms=3_600_001),
        use("u", at(0), duration_ms=86_400_000),  # the largest allowed
        use("u", at(0), feature="g", duration_ms=100),
        use("u", at(0), feature="g", duration_ms=200),
        use("u", at(0), feature="g"),  # no duration: no observation
        msg("u", "signup", at(0), duration_ms=700),  # ignored on other types
        msg("u", "exposure", at(0), feature="h", duration_ms=700),
        answer("u", at(0), "csat", 3, "i"),
    ]
    s = samples(raws)
    assert buckets(s, "f") == [2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 6]
    assert s[k(f"{DURATION}_count", feature="f")] == 6
    assert s[k(f"{DURATION}_sum", feature="f")] == 93_601.002  # (0+500+501+3600000+3600001+86400000) ms
    assert buckets(s, "g") == [2] * 12
    assert s[k(f"{DURATION}_sum", feature="g")] == 0.3  # exact: not 0.1 + 0.2 = 0.30000000000000004
    assert buckets(s, "*") == [4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 8]
    assert s[k(f"{DURATION}_sum", feature="*")] == 93_601.302
    for feature in ("h", "i"):  # seen in an exposure / only in an answer: present and empty
        assert buckets(s, feature) == [0] * 12
        assert s[k(f"{DURATION}_count", feature=feature)] == 0
        assert s[k(f"{DURATION}_sum", feature=feature)] == 0
    assert len(family(s, f"{DURATION}_bucket")) == 12 * 5  # *, f, g, h, i


def test_feature_named_only_by_an_answer_is_seen() -> None:
    """IMPLEMENTATION CHOICE: an accepted answer about a feature makes it "seen in any accepted event"."""
    s = samples([answer("u", at(0), "ces", 4, "only-asked")])
    assert s[k("adoptstream_active_users", feature="only-asked", window="30d")] == 0
    assert s[k("adoptstream_feature_uses_total", feature="only-asked")] == 0
    assert s[k("adoptstream_time_to_first_use_seconds_count", feature="only-asked")] == 0
    assert lifecycle(s, "only-asked", "30d") == (0, 0, 0, 0)
    assert active_days(s, "only-asked", "30d") == {}
    assert s[k(f"{DURATION}_count", feature="only-asked")] == 0
    assert scores(s, "only-asked", "ces", "30d") == {**dict.fromkeys(range(1, 8), 0), 4: 1}


def test_no_events_every_unconditional_series_is_zero() -> None:
    s = samples([b"not json"])
    assert s[k("adoptstream_events_total", outcome="invalid")] == 1
    assert lifecycle(s, "*", "1d") == (0, 0, 0, 0)
    assert active_days(s, "*", "7d") == {}
    assert [s[k("adoptstream_signed_up_users", period=p)] for p in ("1d", "7d", "30d")] == [0, 0, 0]
    assert len(family(s, "adoptstream_feedback_users")) == 2 * (11 + 5 + 7)
    assert buckets(s, "*") == [0] * 12


# -- 3.1 parsing -----------------------------------------------------------------------------------

BASE = b'{"event_id":"e","user_id":"u","ts":1717243200000,'


def raw(tail: str) -> bytes:
    return BASE + tail.encode() + b"}"


INVALID = [
    # score: a JSON integer, not a fraction / exponent / boolean / string / null, and in range
    ('"type":"feedback","scale":"csat","score":5.0', "score 5.0"),
    ('"type":"feedback","scale":"csat","score":5e0', "score 5e0"),
    ('"type":"feedback","scale":"csat","score":5E+0', "score 5E+0"),
    ('"type":"feedback","scale":"csat","score":50e-1', "score 50e-1"),
    ('"type":"feedback","scale":"csat","score":true', "score true"),
    ('"type":"feedback","scale":"csat","score":"5"', "score string"),
    ('"type":"feedback","scale":"csat","score":null', "score null"),
    ('"type":"feedback","scale":"csat","score":[5]', "score list"),
    ('"type":"feedback","scale":"csat"', "score missing"),
    ('"type":"feedback","scale":"nps","score":-1', "nps -1"),
    ('"type":"feedback","scale":"nps","score":11', "nps 11"),
    ('"type":"feedback","scale":"csat","score":0', "csat 0"),
    ('"type":"feedback","scale":"csat","score":-0', "csat -0"),
    ('"type":"feedback","scale":"csat","score":6', "csat 6"),
    ('"type":"feedback","scale":"ces","score":0', "ces 0"),
    ('"type":"feedback","scale":"ces","score":8', "ces 8"),
    ('"type":"feedback","scale":"nps","score":100000000000000000000', "nps huge"),
    # scale: one of the three names, exactly
    ('"type":"feedback","scale":"NPS","score":5', "scale NPS"),
    ('"type":"feedback","scale":"likert","score":5', "scale unknown"),
    ('"type":"feedback","scale":null,"score":5', "scale null"),
    ('"type":"feedback","scale":1,"score":5', "scale number"),
    ('"type":"feedback","score":5', "scale missing"),
    # feature, when present, follows section 1; cohort too
    ('"type":"feedback","scale":"nps","score":5,"feature":"Bad Feature"', "feature bad"),
    ('"type":"feedback","scale":"nps","score":5,"feature":""', "feature empty"),
    ('"type":"feedback","scale":"nps","score":5,"feature":5', "feature number"),
    ('"type":"feedback","scale":"nps","score":5,"cohort":""', "cohort empty"),
    ('"type":"Feedback","scale":"nps","score":5', "type case"),
    # duration_ms on a use: a JSON integer 0..86,400,000, nothing else
    ('"type":"use","feature":"f","duration_ms":null', "duration null"),
    ('"type":"use","feature":"f","duration_ms":-1', "duration -1"),
    ('"type":"use","feature":"f","duration_ms":86400001', "duration too large"),
    ('"type":"use","feature":"f","duration_ms":1.5', "duration 1.5"),
    ('"type":"use","feature":"f","duration_ms":5.0', "duration 5.0"),
    ('"type":"use","feature":"f","duration_ms":-0.0', "duration -0.0"),
    ('"type":"use","feature":"f","duration_ms":1e3', "duration 1e3"),
    ('"type":"use","feature":"f","duration_ms":"10"', "duration string"),
    ('"type":"use","feature":"f","duration_ms":true', "duration true"),
    ('"type":"use","feature":"f","duration_ms":{}', "duration object"),
]


@pytest.mark.parametrize("tail", [pytest.param(t, id=i) for t, i in INVALID])
def test_invalid_v2(tail: str) -> None:
    assert model.parse(raw(tail)) is None


VALID = [
    # (tail, type, feature, scale, score, duration_ms)
    ('"type":"feedback","scale":"nps","score":0', "feedback", None, "nps", 0, None),
    ('"type":"feedback","scale":"nps","score":-0', "feedback", None, "nps", 0, None),  # -0 is the integer 0
    ('"type":"feedback","scale":"nps","score":10,"feature":"f"', "feedback", "f", "nps", 10, None),
    ('"type":"feedback","scale":"csat","score":1,"feature":null', "feedback", None, "csat", 1, None),
    ('"type":"feedback","scale":"csat","score":5,"cohort":"w"', "feedback", None, "csat", 5, None),
    ('"type":"feedback","scale":"ces","score":1', "feedback", None, "ces", 1, None),
    ('"type":"feedback","scale":"ces","score":7,"duration_ms":-5', "feedback", None, "ces", 7, None),
    ('"type":"use","feature":"f","duration_ms":0', "use", "f", None, None, 0),
    ('"type":"use","feature":"f","duration_ms":-0', "use", "f", None, None, 0),
    ('"type":"use","feature":"f","duration_ms":86400000', "use", "f", None, None, 86_400_000),
    ('"type":"use","feature":"f","scale":"x","score":5.5', "use", "f", None, None, None),
    ('"type":"signup","duration_ms":null', "signup", None, None, None, None),
    ('"type":"signup","duration_ms":"garbage","scale":1,"score":"x"', "signup", None, None, None, None),
    ('"type":"signup","duration_ms":-1', "signup", None, None, None, None),
    ('"type":"exposure","feature":"f","duration_ms":1.5', "exposure", "f", None, None, None),
]


@pytest.mark.parametrize(("tail", "etype", "feature", "scale", "score", "duration"), VALID)
def test_valid_v2(
    tail: str, etype: str, feature: str | None, scale: str | None, score: int | None, duration: int | None
) -> None:
    e = model.parse(raw(tail))
    assert e is not None
    assert (e.type, e.feature, e.scale, e.score, e.duration_ms) == (etype, feature, scale, score, duration)


def test_duration_garbage_on_a_signup_still_counts_the_signup() -> None:
    raws = [
        raw('"type":"signup","duration_ms":"soon"'),
        raw('"type":"use","feature":"f","duration_ms":"soon"'),
    ]
    s = samples(raws, scrape_ns=1_717_243_200_000 * MS)
    assert s[k("adoptstream_events_total", outcome="accepted")] == 1
    assert s[k("adoptstream_events_total", outcome="invalid")] == 1
    assert s[k("adoptstream_signed_up_users", period="1d")] == 1
    assert buckets(s, "*") == [0] * 12


def test_feedback_outcomes_like_any_event() -> None:
    now = 1_717_243_200_000 * MS
    use_e = b'{"event_id":"e","user_id":"u","type":"use","feature":"f","ts":1717243200000}'
    same_id = raw('"type":"feedback","scale":"nps","score":9')  # same user and event_id as the use
    other_user = same_id.replace(b'"user_id":"u"', b'"user_id":"v"')
    future = other_user.replace(b'"event_id":"e"', b'"event_id":"x"').replace(
        b"1717243200000", b"1717243500001"
    )
    results = model.classify(list(enumerate([use_e, same_id, other_user, other_user, future])), now)
    assert [o for o, _ in results] == ["accepted", "duplicate", "accepted", "duplicate", "future"]


# -- the v2 strategies, and the model on what they generate ----------------------------------------


def _check_specs(sc: strategies.Scenario) -> None:
    """Every valid message says what its spec says; every mutation of it is invalid."""
    for n, spec in enumerate(sc.specs):
        e = model.parse(strategies.render(spec))
        assert e is not None, spec
        feature = None if spec.type == "signup" else spec.feature
        assert (e.user_id, e.event_id, e.type, e.feature) == (spec.user, spec.event_id, spec.type, feature)
        assert (e.scale, e.score, e.duration_ms) == (spec.scale, spec.score, spec.duration_ms)
        if n < 2:
            for mutation in [*strategies.MUTATIONS, *strategies.MUTATIONS_V2]:
                assert model.parse(mutation(spec)) is None, mutation(spec)


def _check_consistency(s: dict[model.SampleKey, float]) -> None:
    """Relations between families the model computes separately."""
    features = [dict(labels)["feature"] for name, labels in s if name == "adoptstream_feature_uses_total"]
    for f in features:
        for period in ("7d", "30d"):
            # users with >= 1 active day in C are exactly the new, returning and resurrecting ones
            new, returning, resurrecting, _ = lifecycle(s, f, period)
            active = sum(family(s, "adoptstream_active_days_users", feature=f, period=period).values())
            assert active == new + returning + resurrecting
        counts = buckets(s, f)
        assert counts == sorted(counts)
    for scale in strategies.SCALES:
        month = family(s, "adoptstream_feedback_users", feature="*", scale=scale, period="30d")
        quarter = family(s, "adoptstream_feedback_users", feature="*", scale=scale, period="90d")
        assert sum(month.values()) <= sum(quarter.values())
    per_feature = sum(s[k(f"{DURATION}_count", feature=f)] for f in features if f != "*")
    assert s[k(f"{DURATION}_count", feature="*")] == per_feature


def _edges_reached(sc: strategies.Scenario, s: dict[model.SampleKey, float]) -> set[str]:
    accepted = [e for o, e in model.classify(list(enumerate(sc.raws)), sc.now_ns) if o == "accepted" and e]
    tomorrow = (sc.scrape_ns // DAY + 1) * DAY
    answers = [(e.user_id, e.scale, e.ts_ns, e.score) for e in accepted if e.type == "feedback"]
    reached = {
        "dated D+1": any(e.ts_ns >= tomorrow for e in accepted),
        "100 days old": any(e.ts_ns < sc.scrape_ns - 100 * DAY for e in accepted),
        "tied answers": len({a[:3] for a in answers}) < len(set(answers)),
        "answer without feature": any(e.type == "feedback" and e.feature is None for e in accepted),
        "duration on a bound": any(e.duration_ms in strategies.DURATION_BUCKETS_MS for e in accepted),
        "duration max": any(e.duration_ms == 86_400_000 for e in accepted),
        "feature null": any(b'"feature": null' in r for r in sc.raws if r),
        "invalid v2": any(r is not None and b"feedback" in r and model.parse(r) is None for r in sc.raws),
    }
    for scale in strategies.SCALES:
        reached[f"answer {scale}"] = any(e.scale == scale for e in accepted)
    for state in ("new", "returning", "resurrecting", "dormant"):
        reached[f"{state} 30d"] = (
            s[k("adoptstream_lifecycle_users", feature="*", period="30d", state=state)] > 0
        )
    reached["3+ active days"] = any(
        v
        for (n, labels), v in s.items()
        if n == "adoptstream_active_days_users" and int(dict(labels)["days"]) >= 3
    )
    return {name for name, hit in reached.items() if hit}


def test_model_on_generated_v2_scenarios() -> None:
    """The v2 strategies write what their specs say and reach every edge; on what they generate the
    model is order-free and its families agree with each other. Derandomized, yet the examples
    still move with what else the session collected, so only edges these strategies reach often are
    required here; the rare ones (a score written -0) have hand-checked examples above."""
    reached: set[str] = set()

    @settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategies.scenarios(identical_duplicates=True, max_size=60, v2=True))
    def check(sc: strategies.Scenario) -> None:
        _check_specs(sc)
        s = model.expected_samples(list(enumerate(sc.raws)), sc.now_ns, sc.scrape_ns)
        shuffled = [sc.raws[i] for i in sc.perm]
        assert model.expected_samples(list(enumerate(shuffled)), sc.now_ns, sc.scrape_ns) == s
        _check_consistency(s)
        reached.update(_edges_reached(sc, s))

    check()
    everything = {"dated D+1", "100 days old", "tied answers", "answer without feature"}
    everything |= {
        "duration on a bound",
        "duration max",
        "feature null",
        "invalid v2",
        "3+ active days",
    }
    everything |= {f"answer {scale}" for scale in strategies.SCALES}
    everything |= {f"{state} 30d" for state in ("new", "returning", "resurrecting", "dormant")}
    assert everything - reached == set()
