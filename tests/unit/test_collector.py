"""AdoptionCollector: scrape-time families from AdoptionTotals, label caps, histogram shape, freshness."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adoptstream.core.entries import event_entry
from adoptstream.core.events import Event, Outcome
from adoptstream.core.state import SourceOutcomes, UserState
from adoptstream.core.totals import HOUR_NS, WINDOWS_DAYS, AdoptionTotals, totals_of, window_start_hour
from adoptstream.exposition.collector import OVERFLOW, AdoptionCollector

NS = 1_000_000_000
HOUR = 3_600 * NS
DAY = 24 * HOUR
T = 1_717_200_000 // 3600 * 3600 * NS + 42 * NS
LE = ["60.0", "300.0", "900.0", "3600.0", "14400.0", "86400.0", "259200.0", "604800.0", "2592000.0", "+Inf"]


class Source:
    """A stand-in for the worker with one partition: the totals the test set last (`calls` counts merges)."""

    def __init__(self, totals: AdoptionTotals) -> None:
        self.totals = totals
        self.calls = 0

    def partition_totals(self) -> list[AdoptionTotals]:
        return [self.totals]

    def merged_totals(self) -> AdoptionTotals:
        self.calls += 1
        return self.totals


def user(*events: Event) -> UserState:
    state = UserState()
    for i, ev in enumerate(events):
        assert state.apply(event_entry(ev, 0, i, 0)) is Outcome.ACCEPTED
    return state


def ev(
    uid: str, etype: str, feature: str | None, ts_ns: int, cohort: str | None = None, eid: str = ""
) -> Event:
    return Event(eid or f"{etype}-{feature}-{ts_ns}", uid, etype, feature, ts_ns, cohort)


def scrape(collector: AdoptionCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples through the real exposition format (generate_latest, parsed back)."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def k(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def series(samples: dict, name: str, label: str) -> set[str]:
    return {dict(lbl)[label] for n, lbl in samples if n == name}


def make(
    totals: AdoptionTotals, max_features: int = 100, max_cohorts: int = 100, now: int = T
) -> AdoptionCollector:
    return AdoptionCollector(Source(totals), max_features, max_cohorts, clock_ns=lambda: now)


# -- families and types -----------------------------------------------------------------------------


def test_families_types_and_empty_state() -> None:
    registry = CollectorRegistry()
    source = Source(AdoptionTotals())
    registry.register(AdoptionCollector(source, 10, 10, clock_ns=lambda: T))
    assert source.calls == 0  # registering must not collect: describe() names the families
    text = generate_latest(registry).decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types == {
        "adoptstream_events": "counter",
        "adoptstream_active_users": "gauge",
        "adoptstream_exposed_users": "gauge",
        "adoptstream_adopted_users": "gauge",
        "adoptstream_time_to_first_use_seconds": "histogram",
        "adoptstream_feature_uses": "counter",
        "adoptstream_label_overflow_values": "gauge",
    }
    s = scrape(AdoptionCollector(Source(AdoptionTotals()), 10, 10, clock_ns=lambda: T))
    for outcome in ("accepted", "duplicate", "invalid", "future"):  # every outcome, even at 0
        assert s[k("adoptstream_events_total", outcome=outcome)] == 0
    for window in ("1d", "7d", "30d"):  # '*' is always present
        assert s[k("adoptstream_active_users", feature="*", window=window)] == 0
    assert s[k("adoptstream_feature_uses_total", feature="*")] == 0
    assert series(s, "adoptstream_exposed_users", "feature") == set()


def test_outcomes_from_users_and_sources() -> None:
    u = user(ev("u", "use", "f", T - HOUR, eid="a"))
    u.apply(event_entry(ev("u", "use", "f", T - HOUR, eid="a"), 0, 9, 0))  # duplicate
    src = SourceOutcomes(last_offset=5, invalid=3, future=2)
    s = scrape(make(totals_of([u], [src])))
    assert [
        s[k("adoptstream_events_total", outcome=o)] for o in ("accepted", "duplicate", "invalid", "future")
    ] == [
        1,
        1,
        3,
        2,
    ]


def test_feature_seen_only_in_exposures_has_all_series() -> None:
    totals = totals_of([user(ev("u", "exposure", "only-exposed", T - DAY, "c"))])
    s = scrape(make(totals))
    for window in ("1d", "7d", "30d"):
        assert s[k("adoptstream_active_users", feature="only-exposed", window=window)] == 0
    assert s[k("adoptstream_exposed_users", feature="only-exposed", cohort="c")] == 1
    assert s[k("adoptstream_adopted_users", feature="only-exposed", cohort="c")] == 0
    assert s[k("adoptstream_feature_uses_total", feature="only-exposed")] == 0
    assert s[k("adoptstream_time_to_first_use_seconds_count", feature="only-exposed")] == 0


def test_star_rules() -> None:
    a = user(
        ev("a", "signup", None, T - 10 * DAY, "s1"),
        ev("a", "use", "f", T - 10 * DAY + 30 * NS),  # earliest use of any feature: ttfu(*) = 30 s
        ev("a", "exposure", "g", T - 5 * DAY),
        ev("a", "use", "g", T - HOUR),
    )
    b = user(ev("b", "signup", None, T - DAY), ev("b", "exposure", "f", T - DAY))  # no use
    c = user(ev("c", "use", "g", T - 2 * HOUR))  # uses without signup or exposure
    s = scrape(make(totals_of([a, b, c])))
    assert s[k("adoptstream_exposed_users", feature="*", cohort="s1")] == 1
    assert s[k("adoptstream_exposed_users", feature="*", cohort="unassigned")] == 1
    assert s[k("adoptstream_adopted_users", feature="*", cohort="s1")] == 1
    assert s[k("adoptstream_adopted_users", feature="*", cohort="unassigned")] == 0
    assert s[k("adoptstream_time_to_first_use_seconds_sum", feature="*")] == 30.0
    assert s[k("adoptstream_time_to_first_use_seconds_count", feature="*")] == 1
    assert s[k("adoptstream_active_users", feature="*", window="1d")] == 2  # a and c
    assert s[k("adoptstream_active_users", feature="*", window="30d")] == 2
    assert s[k("adoptstream_active_users", feature="g", window="1d")] == 2
    assert s[k("adoptstream_active_users", feature="f", window="7d")] == 0
    assert s[k("adoptstream_active_users", feature="f", window="30d")] == 1
    assert s[k("adoptstream_feature_uses_total", feature="*")] == 3
    assert s[k("adoptstream_feature_uses_total", feature="g")] == 2


# -- histogram --------------------------------------------------------------------------------------


def test_histogram_le_values_and_cumulative_counts() -> None:
    t0 = T - 40 * DAY
    ttfu_s = [0, 60, 61, 300, 3600, 86400, 86401, 2592000, 2592001, 10**7]
    users = [
        user(ev(f"u{i}", "exposure", "f", t0), ev(f"u{i}", "use", "f", t0 + v * NS))
        for i, v in enumerate(ttfu_s)
    ]
    users.append(user(ev("late", "use", "f", t0 - DAY), ev("late", "exposure", "f", t0)))  # use first: 0
    s = scrape(make(totals_of(users)))
    les = [d["le"] for n, lbl in s if n.endswith("_bucket") and (d := dict(lbl))["feature"] == "f"]
    assert les == LE
    values = [*ttfu_s, 0]
    for le in LE:
        bound = float("inf") if le == "+Inf" else float(le)
        assert s[k("adoptstream_time_to_first_use_seconds_bucket", feature="f", le=le)] == sum(
            1 for v in values if v <= bound
        ), le
    assert s[k("adoptstream_time_to_first_use_seconds_count", feature="f")] == len(values)
    assert s[k("adoptstream_time_to_first_use_seconds_sum", feature="f")] == sum(values)


def test_histogram_exposition_text() -> None:
    registry = CollectorRegistry()
    t0 = T - DAY
    registry.register(
        make(totals_of([user(ev("u", "exposure", "f", t0), ev("u", "use", "f", t0 + 60 * NS))]))
    )
    text = generate_latest(registry).decode()
    assert "# TYPE adoptstream_time_to_first_use_seconds histogram" in text
    for le in LE:
        cumulative = 1  # ttfu is exactly 60 s: le is inclusive, so every bucket holds it
        assert (
            f'adoptstream_time_to_first_use_seconds_bucket{{feature="f",le="{le}"}} {float(cumulative)}'
            in text
        )
    assert 'adoptstream_time_to_first_use_seconds_count{feature="f"} 1.0' in text
    assert 'adoptstream_time_to_first_use_seconds_sum{feature="f"} 60.0' in text


def test_histogram_sum_keeps_nanoseconds() -> None:
    t0 = T - DAY
    s = scrape(make(totals_of([user(ev("u", "exposure", "f", t0), ev("u", "use", "f", t0 + 1_500_000_001))])))
    assert s[k("adoptstream_time_to_first_use_seconds_sum", feature="f")] == 1.500000001
    assert s[k("adoptstream_time_to_first_use_seconds_bucket", feature="f", le="60.0")] == 1


# -- label caps -------------------------------------------------------------------------------------


def _four_features() -> list[UserState]:
    out = []
    for i, f in enumerate(["a", "b", "c", "d"]):
        out.append(
            user(
                ev(f"u{f}", "signup", None, T - 3 * DAY, "s"),
                ev(f"u{f}", "exposure", f, T - 2 * DAY, "c1"),
                ev(f"u{f}", "use", f, T - 2 * DAY + (i + 1) * 100 * NS),
                ev(f"u{f}", "use", f, T - 2 * DAY + 5_000 * NS),
            )
        )
    out.append(user(ev("shared", "use", "c", T - HOUR), ev("shared", "use", "d", T - HOUR)))
    return out


def test_feature_cap_folds_into_overflow_and_counts() -> None:
    totals = totals_of(_four_features())
    uncapped = scrape(make(totals))
    s = scrape(make(totals, max_features=2))
    assert series(s, "adoptstream_active_users", "feature") == {"*", "a", "b", OVERFLOW}
    assert s[k("adoptstream_label_overflow_values", label="feature")] == 2  # c and d
    assert s[k("adoptstream_label_overflow_values", label="cohort")] == 0
    # '*' is never folded, and its numbers do not change
    for (name, labels), v in uncapped.items():
        kept = dict(labels).get("feature", "*") in ("*", "a", "b")
        if kept and name != "adoptstream_label_overflow_values":
            assert s[(name, labels)] == v, (name, labels)
    # the overflow series are the sums of the folded features' series
    for name, extra in [
        ("adoptstream_exposed_users", {"cohort": "c1"}),
        ("adoptstream_adopted_users", {"cohort": "c1"}),
        ("adoptstream_feature_uses_total", {}),
        ("adoptstream_time_to_first_use_seconds_count", {}),
        ("adoptstream_time_to_first_use_seconds_sum", {}),
        ("adoptstream_active_users", {"window": "1d"}),
        *[("adoptstream_time_to_first_use_seconds_bucket", {"le": le}) for le in LE],
    ]:
        folded = sum(uncapped[k(name, feature=f, **extra)] for f in ("c", "d"))
        assert s[k(name, feature=OVERFLOW, **extra)] == folded, (name, extra)
    # (a user active in two folded features counts twice in the overflow series: it is a sum)
    assert s[k("adoptstream_active_users", feature=OVERFLOW, window="1d")] == 2


def test_star_is_never_folded_even_with_cap_zero() -> None:
    s = scrape(make(totals_of(_four_features()), max_features=0))
    assert series(s, "adoptstream_active_users", "feature") == {"*", OVERFLOW}
    assert s[k("adoptstream_label_overflow_values", label="feature")] == 4
    assert s[k("adoptstream_exposed_users", feature="*", cohort="s")] == 5 - 1  # 'shared' never signed up
    assert s[k("adoptstream_feature_uses_total", feature="*")] == 10


def test_cohort_cap() -> None:
    users = [
        user(ev("x", "exposure", "f", T - DAY, "alpha")),
        user(ev("y", "exposure", "f", T - DAY, "beta"), ev("y", "use", "f", T)),
        user(ev("z", "exposure", "f", T - DAY, "gamma")),
    ]
    s = scrape(make(totals_of(users), max_cohorts=1))
    assert s[k("adoptstream_exposed_users", feature="f", cohort="alpha")] == 1
    assert s[k("adoptstream_exposed_users", feature="f", cohort=OVERFLOW)] == 2
    assert s[k("adoptstream_adopted_users", feature="f", cohort=OVERFLOW)] == 1
    assert s[k("adoptstream_label_overflow_values", label="cohort")] == 2


def test_feature_cohort_pairs_are_capped_not_only_each_label() -> None:
    """20 features x 20 cohorts, each label under its own cap: the pairs' cap bounds the series."""
    users = [
        user(
            ev(f"u{f}-{c}", "exposure", f"f{f:02d}", T - DAY, f"c{c:02d}"),
            ev(f"u{f}-{c}", "use", f"f{f:02d}", T),
        )
        for f in range(20)
        for c in range(20)
    ]
    totals = totals_of(users)
    uncapped = scrape(make(totals))
    collector = AdoptionCollector(Source(totals), 100, 100, clock_ns=lambda: T, max_feature_cohorts=50)
    s = scrape(collector)
    pairs = {
        dict(labels)["feature"] + "/" + dict(labels)["cohort"]
        for name, labels in s
        if name == "adoptstream_exposed_users"
    }
    assert len(pairs) <= 50 + 20  # the admitted pairs and one overflow cohort per feature
    assert s[k("adoptstream_label_overflow_values", label="feature_cohort")] == 400 - 50
    for name in ("adoptstream_exposed_users", "adoptstream_adopted_users"):
        for f in range(20):  # each feature's numbers still add up over its cohorts
            want = sum(
                v for (n, lab), v in uncapped.items() if n == name and dict(lab)["feature"] == f"f{f:02d}"
            )
            got = sum(v for (n, lab), v in s.items() if n == name and dict(lab)["feature"] == f"f{f:02d}")
            assert got == want == 20


def test_cap_is_first_come_and_sticky_across_scrapes() -> None:
    source = Source(totals_of([user(ev("u", "use", "zz", T))]))
    collector = AdoptionCollector(source, 1, 10, clock_ns=lambda: T)
    assert "zz" in series(scrape(collector), "adoptstream_feature_uses_total", "feature")
    source.totals = totals_of([user(ev("u", "use", "zz", T)), user(ev("v", "use", "aa", T))])
    s = scrape(collector)
    # 'aa' sorts first but 'zz' was admitted first: the label set does not flip between scrapes
    assert series(s, "adoptstream_feature_uses_total", "feature") == {"*", "zz", OVERFLOW}
    assert s[k("adoptstream_label_overflow_values", label="feature")] == 1


# -- freshness: every scrape is built from the current totals ---------------------------------------


def test_every_scrape_reflects_current_totals() -> None:
    u = user(ev("u", "exposure", "f", T - DAY, "late-cohort"), ev("u", "use", "f", T - HOUR))
    source = Source(totals_of([u]))
    collector = AdoptionCollector(source, 100, 100, clock_ns=lambda: T)
    s1 = scrape(collector)
    assert s1[k("adoptstream_exposed_users", feature="f", cohort="late-cohort")] == 1

    # a late, earlier exposure moves the user to another cohort; updated incrementally like the runtime
    totals = source.totals
    totals.add_user(u, -1)
    u.apply(event_entry(ev("u", "exposure", "f", T - 3 * DAY, "early"), 0, 99, 0))
    totals.add_user(u, +1)
    s2 = scrape(collector)
    assert series(s2, "adoptstream_exposed_users", "cohort") == {"early"}  # no stale 'late-cohort' series
    assert s2[k("adoptstream_time_to_first_use_seconds_sum", feature="f")] == (3 * DAY - HOUR) / NS
    assert s2[k("adoptstream_time_to_first_use_seconds_bucket", feature="f", le="86400.0")] == 0

    # the partition moves away: its features disappear from the next scrape
    source.totals = totals_of([user(ev("other", "use", "g", T))])
    s3 = scrape(collector)
    assert series(s3, "adoptstream_active_users", "feature") == {"*", "g"}
    assert series(s3, "adoptstream_exposed_users", "feature") == set()


def test_windows_follow_the_scrape_clock() -> None:
    totals = totals_of([user(ev("u", "use", "f", T - 2 * HOUR))])
    now = [T]
    collector = AdoptionCollector(Source(totals), 10, 10, clock_ns=lambda: now[0])
    h = T - T % HOUR
    expectations = [
        (T, {"1d": 1, "7d": 1, "30d": 1}),
        (h + 22 * HOUR - 1, {"1d": 1, "7d": 1, "30d": 1}),  # the use's hour is the 24th hour of 1d
        (h + 22 * HOUR, {"1d": 0, "7d": 1, "30d": 1}),
        (h + 29 * DAY + 22 * HOUR, {"1d": 0, "7d": 0, "30d": 0}),
    ]
    for at, windows in expectations:
        now[0] = at
        s = scrape(collector)
        for window, n in windows.items():
            assert s[k("adoptstream_active_users", feature="f", window=window)] == n, (at, window)


def test_stale_zero_cohort_does_not_take_a_cap_slot() -> None:
    u = user(ev("u", "exposure", "f", T - DAY, "alpha"))
    totals = totals_of([u])
    totals.add_user(u, -1)  # the runtime's incremental update
    u.apply(
        event_entry(ev("u", "exposure", "f", T - 2 * DAY, "beta"), 0, 5, 0)
    )  # earlier: the cohort is now beta
    totals.add_user(u, +1)
    after_restart = scrape(make(totals_of([u]), max_cohorts=1))
    assert after_restart[k("adoptstream_exposed_users", feature="f", cohort="beta")] == 1
    live = scrape(make(totals, max_cohorts=1))
    assert live == after_restart


@given(
    st.dictionaries(st.integers(-100, 2_000), st.integers(0, 5), max_size=300),
    st.integers(0, 1_500),
)
def test_active_users_range_sum_equals_bucket_walk(hours: dict[int, int], now_hour: int) -> None:
    totals = AdoptionTotals()
    totals.active_hours["f"].update({h + 480_000: c for h, c in hours.items()})  # near 2024
    now_ns = (now_hour + 480_000) * HOUR_NS + 59 * 60 * 10**9
    got = totals.active_users("f", now_ns)
    for window, days in WINDOWS_DAYS.items():
        start = window_start_hour(now_ns, days)
        assert got[window] == sum(c for h, c in totals.active_hours["f"].items() if h >= start)
    assert totals.active_users("missing", now_ns) == dict.fromkeys(WINDOWS_DAYS, 0)


# -- name[] filter: only the families asked for are built -------------------------------------------


class PartitionedSource(Source):
    """A source that also hands out the partitions' own totals, like the worker's StateProcessor."""

    def __init__(self, parts: list[AdoptionTotals]) -> None:
        merged = AdoptionTotals()
        for part in parts:
            merged.merge(part)
        super().__init__(merged)
        self.parts = parts

    def partition_totals(self) -> list[AdoptionTotals]:
        return self.parts


def _two_partitions() -> list[AdoptionTotals]:
    return [
        totals_of([user(ev("u", "use", "f", T - HOUR, eid="a")), user(ev("v", "use", "g", T - 9 * DAY))]),
        totals_of([user(ev("w", "exposure", "f", T - 2 * DAY), ev("w", "use", "f", T - DAY))]),
    ]


def filtered(collector: AdoptionCollector, names: set[str]) -> dict[str, list]:
    """What the worker's /metrics?name[]=... builds: the library's restricted registry over the parts."""
    registry = CollectorRegistry()
    for part in collector.parts:
        registry.register(part)
    return {f.name: f.samples for f in registry.restricted_registry(names).collect()}


def test_summable_families_alone_skip_the_merge() -> None:
    source = PartitionedSource(_two_partitions())
    collector = AdoptionCollector(source, 10, 10, clock_ns=lambda: T)
    wanted = {"adoptstream_events_total", "adoptstream_active_users", "adoptstream_feature_uses_total"}
    partial = filtered(collector, wanted)
    assert source.calls == 0
    full = {f.name: f.samples for f in collector.collect()}
    assert source.calls >= 1
    summable = ("adoptstream_events", "adoptstream_active_users", "adoptstream_feature_uses")
    assert partial == {name: full[name] for name in summable}
    assert {(s.labels["feature"], s.labels["window"]): s.value for s in partial["adoptstream_active_users"]}[
        ("f", "7d")
    ] == 2
    # one partition holding the merged totals gives the same numbers
    plain = AdoptionCollector(Source(source.totals), 10, 10, clock_ns=lambda: T)
    assert filtered(plain, wanted) == partial


def test_partial_scrape_admits_features_like_a_full_one() -> None:
    parts = _two_partitions()
    partial_first = AdoptionCollector(PartitionedSource(parts), 1, 10, clock_ns=lambda: T)
    filtered(partial_first, {"adoptstream_active_users"})
    full_first = AdoptionCollector(PartitionedSource(parts), 1, 10, clock_ns=lambda: T)
    list(full_first.collect())
    assert partial_first.features.folded == full_first.features.folded == {"g"}
    assert [f.samples for f in partial_first.collect()] == [f.samples for f in full_first.collect()]


def test_name_filter_keeps_only_the_named_samples() -> None:
    totals = totals_of([user(ev("u", "exposure", "f", T - 2 * HOUR), ev("u", "use", "f", T - HOUR))])
    collector = make(totals)
    got = filtered(collector, {"adoptstream_time_to_first_use_seconds_count", "nope"})
    assert list(got) == ["adoptstream_time_to_first_use_seconds"]
    samples = got["adoptstream_time_to_first_use_seconds"]
    assert {s.name for s in samples} == {"adoptstream_time_to_first_use_seconds_count"}
    assert {s.labels["feature"]: s.value for s in samples} == {"*": 0, "f": 1}
    assert filtered(collector, {"nope"}) == {}


def test_every_part_describes_what_it_yields() -> None:
    totals = totals_of([user(ev("u", "exposure", "f", T - 2 * HOUR, "c"), ev("u", "use", "f", T - HOUR))])
    for part in make(totals).parts:
        assert [(m.name, m.type) for m in part.describe()] == [(m.name, m.type) for m in part.collect()]


def test_active_users_remembered_per_hour_until_the_totals_change() -> None:
    totals = totals_of([user(ev("u", "use", "f", T - HOUR))])
    first = totals.active_users("f", T)
    assert totals.active_users("f", T + 60 * NS) is first  # same clock hour, nothing changed
    assert totals.active_users("f", T + DAY)["1d"] == 0  # another hour: computed afresh
    totals.add_user(user(ev("v", "use", "f", T - 2 * HOUR)))
    assert totals.active_users("f", T)["1d"] == 2
    other = totals_of([user(ev("w", "use", "f", T))])
    totals.merge(other)
    assert totals.active_users("f", T)["1d"] == 3
    totals.add_user(user(ev("w", "use", "f", T)), -1)
    assert totals.active_users("f", T)["1d"] == 2
