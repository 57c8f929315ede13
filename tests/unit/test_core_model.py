"""The real stages against the brute-force model of CONTRACT.md, exactly, sample by sample.

Random message sequences (valid, invalid, future, duplicates, three ts formats, window and bucket
edges) go through the worker's own stage functions (`ingest.route`, by-user packs,
`processor.apply_batch`, the stores, `derive_totals`; see pipeline.py), are scraped through the
collectors, and are compared with `model.expected_samples` under every variation that must not change
the numbers: order, replays, crash + restore, partitioning by user, incremental vs derived totals.
"""

from __future__ import annotations

import json

import model
from hypothesis import given
from hypothesis import strategies as st
from pipeline import assert_samples, check_all_variants, check_clock_moves, run, scrape
from strategies import BUCKETS_S, DAY, H0, HOUR, MS, NS, Scenario, examples, iso, scenarios


@examples(100)
@given(scenarios(identical_duplicates=True))
def test_core_equals_model_order_free(sc: Scenario) -> None:
    check_all_variants(sc, order_free=True)


@examples(60)
@given(scenarios(identical_duplicates=False))
def test_core_equals_model_conflicting_duplicates_in_arrival_order(sc: Scenario) -> None:
    """Same (user, event_id) with different content: the first arrival wins, later ones are duplicates."""
    check_all_variants(sc, order_free=False)


@examples(40)
@given(scenarios(identical_duplicates=True, max_size=12), st.integers(0, 6))
def test_scrape_time_moves_windows_only(sc: Scenario, hours_later: int) -> None:
    """Later scrapes of unchanged totals: every sample still equals the model at the new T."""
    pipe = run(sc, sc.raws, n_parts=sc.n_parts, batch=sc.batch, src_of=sc.src_of)
    arrivals = list(enumerate(sc.raws))
    for t in (
        sc.scrape_ns + hours_later * HOUR,
        sc.scrape_ns + hours_later * DAY - 1,
        sc.scrape_ns + 31 * DAY,
    ):
        assert_samples(scrape(pipe.totals(), t), model.expected_samples(arrivals, sc.now_ns, t), f"T={t}")


@examples(30)
@given(scenarios(identical_duplicates=True, max_size=20))
def test_clocks_crossing_midnight(sc: Scenario) -> None:
    check_clock_moves(sc)


# -- targeted scenarios (readable, and proof that the generators reach the edges) ---------------------


def _msg(
    user: str, eid: str, etype: str, ts: object, feature: str | None = "f", cohort: str | None = None
) -> bytes:
    obj: dict[str, object] = {"event_id": eid, "user_id": user, "type": etype, "ts": ts}
    if feature is not None:
        obj["feature"] = feature
    if cohort is not None:
        obj["cohort"] = cohort
    return json.dumps(obj, ensure_ascii=False).encode()


def _check(raws: list[bytes | None], now_ns: int, scrape_ns: int) -> dict[model.SampleKey, float]:
    sc = Scenario(raws, now_ns, scrape_ns, 1, [0] * len(raws), 2, 0, 2, list(range(len(raws))), 0)
    check_all_variants(sc, order_free=False)
    return model.expected_samples(list(enumerate(raws)), now_ns, scrape_ns)


def _k(name: str, **labels: str) -> model.SampleKey:
    return name, tuple(sorted(labels.items()))


def test_window_edges_exact() -> None:
    T = H0 + 17 * 60 * NS  # H = H0
    edge = {d: H0 - (24 * d - 1) * HOUR for d in (1, 7, 30)}
    raws = [
        _msg("in-1d", "a", "use", edge[1] // MS),
        _msg("out-1d", "a", "use", (edge[1] - MS) // MS),
        _msg("in-7d", "a", "use", f"{iso(edge[7], 330, '', 9, 'T')}"),
        _msg("out-7d", "a", "use", iso(edge[7] - 1, 0, "Z", 9, "T")),
        _msg("in-30d", "a", "use", edge[30] / MS),
        _msg("out-30d", "a", "use", iso(edge[30] - 1, -480, "", 9, " ")),
    ]
    s = _check(raws, T, T)
    assert s[_k("adoptstream_active_users", feature="f", window="1d")] == 1
    assert s[_k("adoptstream_active_users", feature="f", window="7d")] == 3
    assert s[_k("adoptstream_active_users", feature="f", window="30d")] == 5
    assert s[_k("adoptstream_active_users", feature="*", window="30d")] == 5


def test_bucket_edges_and_star_rules() -> None:
    T = H0
    a = H0 - 40 * DAY  # a + 30 d is still in the past
    raws = [_msg("u", "sign", "signup", a // MS, feature=None, cohort="c1")]
    for i, b in enumerate(BUCKETS_S):
        raws += [
            _msg(f"on-{b}", "x", "exposure", a // MS),
            _msg(f"on-{b}", "y", "use", (a + b * NS) // MS),
            _msg(f"over-{b}", "x", "exposure", iso(a, 0, "Z", 9, "T")),
            _msg(f"over-{b}", "y", "use", iso(a + b * NS + 1, 0, "Z", 9, "T")),
        ]
        raws.append(_msg("u", f"use-{i}", "use", (a + b * NS) // MS, feature=f"g{i}"))
    raws.append(_msg("before", "x", "exposure", a // MS))
    raws.append(_msg("before", "y", "use", (a - DAY) // MS))  # use before exposure: ttfu 0
    s = _check(raws, T, T)
    for i, b in enumerate(BUCKETS_S):
        # the 'on' user of bound b and every smaller one, plus 'before'; 'over' users of smaller bounds
        assert (
            s[_k("adoptstream_time_to_first_use_seconds_bucket", feature="f", le=model.le_label(b))]
            == 2 * i + 2
        )
    assert s[_k("adoptstream_time_to_first_use_seconds_count", feature="f")] == 19
    assert s[_k("adoptstream_exposed_users", feature="*", cohort="c1")] == 1
    assert s[_k("adoptstream_adopted_users", feature="*", cohort="c1")] == 1
    assert (
        s[_k("adoptstream_time_to_first_use_seconds_sum", feature="*")] == 60.0
    )  # earliest use of any feature
    assert s[_k("adoptstream_feature_uses_total", feature="*")] == 19 + 9


def test_cohort_tie_rule_and_late_earlier_exposure() -> None:
    T = H0
    t = H0 - DAY
    raws = [
        _msg("u1", "a", "exposure", t // MS, cohort="wave-1"),
        _msg("u1", "b", "exposure", iso(t, 0, "Z", 0, "T"), cohort="Wave 2 ü"),  # tie: "Wave 2 ü" < "wave-1"
        _msg("u1", "c", "exposure", t / MS),  # tie: absent cohort sorts last
        _msg("u2", "a", "exposure", t // MS),
        _msg("u2", "b", "exposure", t // MS, cohort="wave-1"),  # tie: named beats absent
        _msg("u3", "a", "exposure", t // MS, cohort="wave-1"),
        _msg("u3", "b", "exposure", (t - 1) // MS),  # strictly earlier, no cohort: unassigned
        _msg("u3", "c", "use", t // MS),
    ]
    s = _check(raws, T, T)
    assert s[_k("adoptstream_exposed_users", feature="f", cohort="Wave 2 ü")] == 1
    assert s[_k("adoptstream_exposed_users", feature="f", cohort="wave-1")] == 1
    assert s[_k("adoptstream_exposed_users", feature="f", cohort="unassigned")] == 1
    assert s[_k("adoptstream_adopted_users", feature="f", cohort="unassigned")] == 1
    assert _k("adoptstream_exposed_users", feature="*", cohort="unassigned") not in s  # no signups


def test_outcome_precedence() -> None:
    T = H0
    ok = _msg("u", "e", "use", T // MS)
    future = _msg("u", "e", "use", (T + 5 * 60 * NS + MS) // MS)
    raws = [future, ok, ok, future, b"{}", _msg("u", "e", "use", T // MS - 1)]
    assert [o for o, _ in model.classify(list(enumerate(raws)), T)] == [
        "future",
        "accepted",
        "duplicate",
        "future",
        "invalid",
        "duplicate",
    ]
    _check(raws, T, T)
