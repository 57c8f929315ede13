"""The real stages against the brute-force model of CONTRACT.md, exactly, sample by sample.

Random message sequences (valid, invalid, future, duplicates, three ts formats, window and bucket
edges) go through the worker's own stage functions (`ingest.route`, by-user packs,
`processor.apply_batch`, the stores, `derive_totals`; see pipeline.py), are scraped through the
collectors, and are compared with `model.expected_samples` under every variation that must not change
the numbers: order, replays, crash + restore, partitioning by user, incremental vs derived totals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline import assert_samples, check_all_variants, check_clock_moves, run, scrape

NS = 1_000_000_000
MS = 1_000_000
HOUR = 3_600 * NS
DAY = 24 * HOUR
BUCKETS_S = (60, 300, 900, 3600, 14400, 86400, 259200, 604800, 2592000)

USERS = ["alice", "bob", "ü-用户", "😀", "b\u0301"]
FEATURES = ["search", "export.csv", "a/b:c-1_2"]
COHORTS = [None, "wave-1", "Wave 2 ü"]  # "Wave 2 ü" < "wave-1": the tie rule is visible
EVENT_IDS = ["e0", "e1", "e2", "e3"]
TYPES = ["signup", "exposure", "use"]
H0 = 1_717_200_000 // 3600 * 3600 * NS  # an hour boundary, June 2024
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=_HEALTH)


# -- message generation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One intended event and how its message is written."""

    user: str
    event_id: str
    type: str
    feature: str
    ts_ns: int
    cohort: str | None
    fmt: str  # int | float | iso
    iso_offset_min: int  # None-like 0 with 'Z'
    iso_z: str  # 'Z', 'z' or '' (numeric offset)
    iso_digits: int
    iso_sep: str
    cohort_null: bool  # write "cohort": null instead of omitting it
    signup_junk_feature: bool


def _iso(ts_ns: int, offset_min: int, z: str, digits: int, sep: str) -> str:
    secs, frac = divmod(ts_ns, NS)
    local = datetime(1970, 1, 1) + timedelta(seconds=secs + offset_min * 60)
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    if digits:
        text += "." + f"{frac:09d}"[:digits]
    if z:
        return text + z
    sign = "+" if offset_min >= 0 else "-"
    hh, mm = divmod(abs(offset_min), 60)
    return f"{text}{sign}{hh:02d}:{mm:02d}"


def _obj(spec: Spec) -> dict[str, object]:
    if spec.fmt == "int":
        ts: object = spec.ts_ns // MS
    elif spec.fmt == "float":
        ts = spec.ts_ns / MS  # json writes repr(): the shortest text of this double
    else:
        ts = _iso(spec.ts_ns, spec.iso_offset_min, spec.iso_z, spec.iso_digits, spec.iso_sep)
    obj: dict[str, object] = {"event_id": spec.event_id, "user_id": spec.user, "type": spec.type, "ts": ts}
    if spec.type != "signup":
        obj["feature"] = spec.feature
    elif spec.signup_junk_feature:
        obj["feature"] = "NOT A FEATURE\n"
    if spec.cohort is not None:
        obj["cohort"] = spec.cohort
    elif spec.cohort_null:
        obj["cohort"] = None
    return obj


def render(spec: Spec, variant: int = 0) -> bytes:
    """The message bytes; `variant` changes only ignored parts (unknown fields, key order)."""
    obj = _obj(spec)
    if variant:
        obj["x-unknown"] = {"v": variant, "list": [variant, None, True]}
        obj = dict(reversed(list(obj.items()))) if variant % 2 else obj
    return json.dumps(obj, ensure_ascii=False).encode()


def _with(spec: Spec, **fields: object) -> bytes:
    obj = _obj(spec)
    obj.update(fields)
    return json.dumps(obj, ensure_ascii=False).encode()


def _without(spec: Spec, name: str) -> bytes:
    obj = _obj(spec)
    obj.pop(name, None)
    return json.dumps(obj, ensure_ascii=False).encode()


# every mutation turns a valid message into an invalid one
MUTATIONS: list[Callable[[Spec], bytes | None]] = [
    lambda s: render(s)[:-1],  # bad JSON (truncated)
    lambda s: render(s) + b" x",  # trailing garbage
    lambda s: _without(s, "ts")[:-1] + b', "ts": NaN}',
    lambda s: _without(s, "ts")[:-1] + b', "ts": Infinity}',
    lambda s: _without(s, "event_id"),
    lambda s: _without(s, "user_id"),
    lambda s: _without(s, "type"),
    lambda s: _without(s, "ts"),
    lambda s: _with(s, type="use", feature=None),
    lambda s: _with(s, event_id=7),
    lambda s: _with(s, user_id=None),
    lambda s: _with(s, type="click"),
    lambda s: _with(s, ts=True),
    lambda s: _with(s, ts=False),
    lambda s: _with(s, ts=str(s.ts_ns // MS)),
    lambda s: _with(s, ts=datetime(2024, 6, 1).isoformat()),  # naive
    lambda s: _with(s, event_id="e" * 129),
    lambda s: _with(s, user_id="ü" * 257),
    lambda s: _with(s, type="exposure", feature="Search"),
    lambda s: _with(s, type="use", feature="abc\n"),
    lambda s: _with(s, type="use", feature="_x"),
    lambda s: _with(s, type="use", feature=""),
    lambda s: _with(s, cohort=""),
    lambda s: _with(s, cohort="c" * 65),
    lambda s: _with(s, cohort="tab\there"),
    lambda s: _with(s, cohort=3),
    lambda s: _without(s, "user_id")[:-1] + b', "user_id": "\\udc00"}',  # lone surrogate
    lambda s: b"[" + render(s) + b"]",
    lambda s: b"\xff" + render(s),
    lambda s: None,
    lambda s: _with(s, pad="p" * 65_536),
]


@dataclass
class Scenario:
    raws: list[bytes | None]
    now_ns: int  # the monitor's clock at ingest (future rule)
    scrape_ns: int  # T
    n_src: int
    src_of: list[int]  # input partition of every arrival
    n_parts: int
    batch: int
    perm: list[int]
    rng_seed: int
    specs: list[Spec] = field(default_factory=list)


def _anchor(scrape_ns: int) -> int:
    """The time of the exposures and signups that make TTFU land on bucket bounds."""
    return scrape_ns - scrape_ns % HOUR - 10 * DAY - 17 * HOUR


def _edges(scrape_ns: int, now_ns: int) -> list[int]:
    """Event times on every boundary that matters: hours, window starts, +5 min, TTFU buckets."""
    h = scrape_ns - scrape_ns % HOUR
    anchor = _anchor(scrape_ns)
    edges = [h, h - 1, h + HOUR, h - HOUR, anchor]
    for days in (1, 7, 30):
        start = h - (24 * days - 1) * HOUR
        edges += [start, start - 1, start - MS, start + MS, start - HOUR]
    for d in (0, 1, MS, -1, HOUR, DAY):
        edges.append(now_ns + 5 * 60 * NS + d)
    for b in BUCKETS_S:
        edges += [anchor + b * NS, anchor + b * NS + 1, anchor + b * NS + MS]
    return edges


@st.composite
def _spec(draw: st.DrawFn, scrape_ns: int, edges: list[int]) -> Spec:
    user, event_id, etype, feature, cohort = draw(
        st.tuples(*(st.sampled_from(v) for v in (USERS, EVENT_IDS, TYPES, FEATURES, COHORTS)))
    )
    anchor = _anchor(scrape_ns)
    ttfu_edge = (
        st.just(anchor)
        if etype != "use"
        else st.sampled_from(BUCKETS_S).flatmap(
            lambda b: st.sampled_from([0, 1, -1, MS]).map(lambda d: anchor + b * NS + d)
        )
    )
    ts_ns = draw(
        st.one_of(
            ttfu_edge,
            st.sampled_from(edges),
            st.integers(scrape_ns - 40 * DAY, scrape_ns + DAY),
            st.integers(scrape_ns - 40 * DAY, scrape_ns).map(lambda t: t - t % HOUR),
        )
    )
    # how the message is written: drawn from one integer (cheap to generate, still reproducible)
    w = draw(st.integers(0, 2**20))
    z = ("Z", "z", "")[w % 3]
    return Spec(
        user=user,
        event_id=event_id,
        type=etype,
        feature=feature,
        ts_ns=ts_ns,
        cohort=cohort,
        fmt=("int", "float", "iso", "iso")[(w >> 2) % 4],
        iso_offset_min=0 if z else (0, 330, -480, 345)[(w >> 4) % 4],
        iso_z=z,
        iso_digits=(0, 3, 6, 9)[(w >> 6) % 4],
        iso_sep=("T", "t", " ")[(w >> 8) % 3],
        cohort_null=bool(w >> 10 & 1),
        signup_junk_feature=bool(w >> 11 & 1),
    )


@st.composite
def scenarios(draw: st.DrawFn, identical_duplicates: bool, max_size: int = 40) -> Scenario:
    scrape_ns = H0 + draw(st.one_of(st.sampled_from([0, 1, HOUR - 1, HOUR // 2]), st.integers(0, HOUR - 1)))
    now_ns = scrape_ns - draw(st.one_of(st.sampled_from([0, 1, 5 * 60 * NS]), st.integers(0, 2 * HOUR)))
    n = draw(st.integers(1, max_size))
    raws: list[bytes | None] = []
    specs: list[Spec] = []
    pool: dict[tuple[str, str], Spec] = {}
    edges = _edges(scrape_ns, now_ns)
    for _ in range(n):
        spec = draw(_spec(scrape_ns, edges))
        kind = draw(st.integers(0, 9))
        if kind == 0:  # invalid
            raws.append(draw(st.sampled_from(MUTATIONS))(spec))
            continue
        if identical_duplicates:  # the same (user, event_id) always carries the same content
            spec = pool.setdefault((spec.user, spec.event_id), spec)
        raws.append(render(spec, draw(st.integers(0, 2)) if kind == 1 else 0))
        specs.append(spec)
    n_src = draw(st.integers(1, 3))
    return Scenario(
        raws=raws,
        now_ns=now_ns,
        scrape_ns=scrape_ns,
        n_src=n_src,
        src_of=[draw(st.integers(0, n_src - 1)) for _ in raws],
        n_parts=draw(st.integers(2, 4)),
        batch=draw(st.integers(1, 8)),
        perm=draw(st.permutations(range(len(raws)))),
        rng_seed=draw(st.integers(0, 2**32)),
        specs=specs,
    )


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
    sc = Scenario(raws, now_ns, scrape_ns, 1, [0] * len(raws), 2, 2, list(range(len(raws))), 0)
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
        _msg("in-7d", "a", "use", f"{_iso(edge[7], 330, '', 9, 'T')}"),
        _msg("out-7d", "a", "use", _iso(edge[7] - 1, 0, "Z", 9, "T")),
        _msg("in-30d", "a", "use", edge[30] / MS),
        _msg("out-30d", "a", "use", _iso(edge[30] - 1, -480, "", 9, " ")),
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
            _msg(f"over-{b}", "x", "exposure", _iso(a, 0, "Z", 9, "T")),
            _msg(f"over-{b}", "y", "use", _iso(a + b * NS + 1, 0, "Z", 9, "T")),
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
        _msg("u1", "b", "exposure", _iso(t, 0, "Z", 0, "T"), cohort="Wave 2 ü"),  # tie: "Wave 2 ü" < "wave-1"
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
