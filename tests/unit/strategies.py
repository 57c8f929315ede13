"""Hypothesis strategies: message sequences to compare the implementation with the model.

`scenarios(v2=False)` writes the events of CONTRACT sections 1 and 2 (what a v1 worker accepts);
`scenarios(v2=True)` adds section 3: feedback of every scale (with, without and with a null
feature, tied `ts`, the same `ts` with different scores), uses with and without `duration_ms`
(bucket edges, 0, 86,400,000, `-0`), ignored v2 fields on other types, hostile v2 values, event
dates over ~130 days before T, and T near a UTC midnight so that events of D+1 (within the
5-minute tolerance) occur. Pure generation: nothing here imports adoptstream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

NS = 1_000_000_000
MS = 1_000_000
HOUR = 3_600 * NS
DAY = 24 * HOUR
BUCKETS_S = (60, 300, 900, 3600, 14400, 86400, 259200, 604800, 2592000)
DURATION_BUCKETS_MS = (500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 900_000, 3_600_000)
MAX_DURATION_MS = 86_400_000
SCALES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}

USERS = ["alice", "bob", "ü-用户", "😀", "b\u0301"]
FEATURES = ["search", "export.csv", "a/b:c-1_2"]
COHORTS = [None, "wave-1", "Wave 2 ü"]  # "Wave 2 ü" < "wave-1": the tie rule is visible
EVENT_IDS = ["e0", "e1", "e2", "e3"]
EVENT_IDS_V2 = [f"e{i}" for i in range(12)]  # more distinct events per user: dates of use, answers
TYPES = ["signup", "exposure", "use"]
TYPES_V2 = [*TYPES, "use", "use", "feedback", "feedback"]  # users come back, users answer
H0 = 1_717_200_000 // 3600 * 3600 * NS  # an hour boundary, June 2024; also a UTC midnight (2024-06-01)
# dates (days before D) where a period's C or P starts or ends: 1d, 7d, 30d (C, P) and 90d (C)
PERIOD_EDGE_DAYS = (0, 1, 2, 6, 7, 8, 13, 14, 15, 29, 30, 31, 59, 60, 61, 89, 90, 91, 130)
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=_HEALTH)


# -- one message --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One intended event and how its message is written."""

    user: str
    event_id: str
    type: str
    feature: str | None  # None: a feedback about the product as a whole
    ts_ns: int
    cohort: str | None
    fmt: str  # int | float | iso
    iso_offset_min: int  # None-like 0 with 'Z'
    iso_z: str  # 'Z', 'z' or '' (numeric offset)
    iso_digits: int
    iso_sep: str
    cohort_null: bool  # write "cohort": null instead of omitting it
    signup_junk_feature: bool
    scale: str | None = None  # feedback
    score: int | None = None  # feedback
    duration_ms: int | None = None  # use, when it carries one
    feature_null: bool = False  # a feedback without feature writes "feature": null
    negative_zero: bool = False  # a score or duration of 0 is written -0
    ignored_v2: bool = False  # v2 fields a type ignores, with garbage values


class Raw(str):
    """A JSON number written as given (`-0`, `5e0`): json.dumps cannot write them."""


_RAW = re.compile(r'"<raw:([^>"]*)>"')


def _dumps(obj: dict[str, object]) -> bytes:
    marked = {k: (f"<raw:{v}>" if isinstance(v, Raw) else v) for k, v in obj.items()}
    return _RAW.sub(r"\1", json.dumps(marked, ensure_ascii=False)).encode()


def iso(ts_ns: int, offset_min: int, z: str, digits: int, sep: str) -> str:
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


def _number(value: int, negative_zero: bool) -> object:
    return Raw("-0") if negative_zero and value == 0 else value


def _obj(spec: Spec) -> dict[str, object]:
    if spec.fmt == "int":
        ts: object = spec.ts_ns // MS
    elif spec.fmt == "float":
        ts = spec.ts_ns / MS  # json writes repr(): the shortest text of this double
    else:
        ts = iso(spec.ts_ns, spec.iso_offset_min, spec.iso_z, spec.iso_digits, spec.iso_sep)
    obj: dict[str, object] = {"event_id": spec.event_id, "user_id": spec.user, "type": spec.type, "ts": ts}
    if spec.type == "signup":
        if spec.signup_junk_feature:
            obj["feature"] = "NOT A FEATURE\n"
    elif spec.feature is not None:
        obj["feature"] = spec.feature
    elif spec.feature_null:
        obj["feature"] = None
    if spec.cohort is not None:
        obj["cohort"] = spec.cohort
    elif spec.cohort_null:
        obj["cohort"] = None
    if spec.type == "feedback":
        assert spec.score is not None
        obj["scale"] = spec.scale
        obj["score"] = _number(spec.score, spec.negative_zero)
    if spec.duration_ms is not None:
        obj["duration_ms"] = _number(spec.duration_ms, spec.negative_zero)
    if spec.ignored_v2:
        if spec.type != "use":
            obj["duration_ms"] = Raw("-1.5e3") if spec.type == "feedback" else None
        if spec.type != "feedback":
            obj["scale"], obj["score"] = "NPS", "ten"
    return obj


def render(spec: Spec, variant: int = 0) -> bytes:
    """The message bytes; `variant` changes only ignored parts (unknown fields, key order)."""
    obj = _obj(spec)
    if variant:
        obj["x-unknown"] = {"v": variant, "list": [variant, None, True]}
        obj = dict(reversed(list(obj.items()))) if variant % 2 else obj
    return _dumps(obj)


def _with(spec: Spec, **fields: object) -> bytes:
    obj = _obj(spec)
    obj.update(fields)
    return _dumps(obj)


def _without(spec: Spec, *names: str, **fields: object) -> bytes:
    obj = _obj(spec)
    for name in names:
        obj.pop(name, None)
    obj.update(fields)
    return _dumps(obj)


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


def _answer(s: Spec, scale: object, score: object) -> bytes:
    return _with(s, type="feedback", scale=scale, score=score)


def _timed_use(s: Spec, duration: object) -> bytes:
    return _with(s, type="use", feature=s.feature or FEATURES[0], duration_ms=duration)


# section 3: every one of them is invalid too (a wrong score, scale, feature or duration_ms)
MUTATIONS_V2: list[Callable[[Spec], bytes | None]] = [
    lambda s: _answer(s, "csat", Raw("5.0")),
    lambda s: _answer(s, "csat", Raw("5e0")),
    lambda s: _answer(s, "nps", Raw("1E+1")),
    lambda s: _answer(s, "ces", Raw("-0.0")),
    lambda s: _answer(s, "csat", True),
    lambda s: _answer(s, "nps", False),
    lambda s: _answer(s, "csat", "5"),
    lambda s: _answer(s, "csat", None),
    lambda s: _without(s, "score", "duration_ms", type="feedback", scale="nps"),
    lambda s: _answer(s, "nps", -1),
    lambda s: _answer(s, "nps", 11),
    lambda s: _answer(s, "csat", 0),
    lambda s: _answer(s, "csat", Raw("-0")),
    lambda s: _answer(s, "csat", 6),
    lambda s: _answer(s, "ces", 0),
    lambda s: _answer(s, "ces", 8),
    lambda s: _answer(s, "NPS", 5),
    lambda s: _answer(s, "likert", 3),
    lambda s: _answer(s, None, 3),
    lambda s: _without(s, "scale", type="feedback", score=3),
    lambda s: _with(s, type="feedback", scale="nps", score=9, feature="Search"),
    lambda s: _with(s, type="feedback", scale="nps", score=9, feature=""),
    lambda s: _with(s, type="feedback", scale="nps", score=9, feature=7),
    lambda s: _timed_use(s, None),
    lambda s: _timed_use(s, -1),
    lambda s: _timed_use(s, MAX_DURATION_MS + 1),
    lambda s: _timed_use(s, 1.5),
    lambda s: _timed_use(s, Raw("500.0")),
    lambda s: _timed_use(s, Raw("5e2")),
    lambda s: _timed_use(s, "10"),
    lambda s: _timed_use(s, True),
    lambda s: _timed_use(s, [500]),
]


# -- a scenario ---------------------------------------------------------------------------------------


@dataclass
class Scenario:
    raws: list[bytes | None]
    now_ns: int  # the monitor's clock at ingest (future rule)
    scrape_ns: int  # T
    n_src: int
    src_of: list[int]  # input partition of every arrival
    n_parts: int
    part_seed: int
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


def _date_edges(scrape_ns: int, now_ns: int) -> list[int]:
    """Event times at the first and last instants of the dates where periods start and end, and on
    the next date (D + 1) up to the 5-minute tolerance."""
    midnight = scrape_ns - scrape_ns % DAY  # 00:00 of D
    edges = []
    for k in PERIOD_EDGE_DAYS:
        first = midnight - k * DAY
        edges += [first, first + MS, first + DAY - MS, first + DAY - 1, first + 12 * HOUR]
    tomorrow = midnight + DAY
    tolerance = now_ns + 5 * 60 * NS
    edges += [tomorrow, tomorrow + MS, tolerance, tolerance - MS, tolerance + 1]
    return edges


@st.composite
def _spec(
    draw: st.DrawFn,
    scrape_ns: int,
    edges: list[int],
    v2: bool = False,
    now_ns: int = 0,
    tied: tuple[int, ...] = (),
) -> Spec:
    choices = (
        (USERS, EVENT_IDS_V2, TYPES_V2, FEATURES, COHORTS)
        if v2
        else (USERS, EVENT_IDS, TYPES, FEATURES, COHORTS)
    )
    user, event_id, etype, feature, cohort = draw(st.tuples(*(st.sampled_from(v) for v in choices)))
    anchor = _anchor(scrape_ns)
    ttfu_edge = (
        st.just(anchor)
        if etype != "use"
        else st.sampled_from(BUCKETS_S).flatmap(
            lambda b: st.sampled_from([0, 1, -1, MS]).map(lambda d: anchor + b * NS + d)
        )
    )
    times = [
        ttfu_edge,
        st.sampled_from(edges),
        st.integers(scrape_ns - 40 * DAY, scrape_ns + DAY),
        st.integers(scrape_ns - 40 * DAY, scrape_ns).map(lambda t: t - t % HOUR),
    ]
    if v2:
        midnight = scrape_ns - scrape_ns % DAY
        # some time on a date of the last two 30d periods: users come back on several dates
        recent = st.tuples(st.integers(0, 59), st.integers(0, DAY - 1)).map(
            lambda d: midnight - d[0] * DAY + d[1]
        )
        times += [
            st.integers(scrape_ns - 130 * DAY, scrape_ns + 10 * 60 * NS),
            recent,
            recent,
            recent,
            # the last minutes before the future tolerance ends (after midnight when T is just before it)
            st.integers(now_ns - 5 * 60 * NS, now_ns + 5 * 60 * NS),
        ]
        if tied:  # times shared by the scenario's events: answers tie on ts
            times += [st.sampled_from(tied)] * 3
    ts_ns = draw(st.one_of(*times))
    # how the message is written: drawn from one integer (cheap to generate, still reproducible)
    w = draw(st.integers(0, 2**20))
    z = ("Z", "z", "")[w % 3]
    spec = Spec(
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
    if not v2:
        return spec
    return draw(_v2_fields(spec, w >> 12))


def _scores(scale: str) -> st.SearchStrategy[int]:
    lo, hi = SCALES[scale]
    return st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi))


_durations = st.one_of(
    st.sampled_from([0, MAX_DURATION_MS]),
    st.sampled_from(DURATION_BUCKETS_MS),  # on a bucket bound: in that bucket
    st.sampled_from(DURATION_BUCKETS_MS).flatmap(lambda b: st.sampled_from([b - 1, b + 1])),
    st.integers(0, MAX_DURATION_MS),
)


@st.composite
def _v2_fields(draw: st.DrawFn, spec: Spec, w: int) -> Spec:
    """The section 3 fields of a spec; `w`: how they are written."""
    fields: dict[str, object] = {"ignored_v2": bool(w & 1), "negative_zero": bool(w >> 1 & 1)}
    if spec.type == "feedback":
        scale = draw(st.sampled_from(sorted(SCALES)))
        fields.update(scale=scale, score=draw(_scores(scale)))
        if w >> 2 & 1:  # about the product as a whole
            fields.update(feature=None, feature_null=bool(w >> 3 & 1))
    elif spec.type == "use" and w >> 4 & 1:
        fields["duration_ms"] = draw(_durations)
    return replace(spec, **fields)


def _scrape_time(v2: bool) -> st.SearchStrategy[int]:
    if not v2:
        return st.one_of(st.sampled_from([0, 1, HOUR - 1, HOUR // 2]), st.integers(0, HOUR - 1)).map(
            lambda d: H0 + d
        )
    # T near the UTC midnight H0, on either side: just before it, events of D + 1 are accepted
    minute = 60 * NS
    return st.one_of(
        st.sampled_from([0, 1, -1, -MS, -5 * minute, -5 * minute + 1, -4 * minute, -minute, HOUR - 1]),
        st.integers(-5 * minute, -1),
        st.integers(-10 * minute, 10 * minute),
        st.integers(-DAY, DAY),
    ).map(lambda d: H0 + d)


@st.composite
def scenarios(draw: st.DrawFn, identical_duplicates: bool, max_size: int = 40, v2: bool = False) -> Scenario:
    """A message sequence with its clocks, partitioning, batching, a permutation and a seed.

    `identical_duplicates`: the same (user, event_id) always carries the same content (then the
    numbers do not depend on the order); `v2`: section 3 events and edges too.
    """
    scrape_ns = draw(_scrape_time(v2))
    now_ns = scrape_ns - draw(st.one_of(st.sampled_from([0, 1, 5 * 60 * NS]), st.integers(0, 2 * HOUR)))
    n = draw(st.integers(1, max_size))
    raws: list[bytes | None] = []
    specs: list[Spec] = []
    pool: dict[tuple[str, str], Spec] = {}
    edges = _edges(scrape_ns, now_ns)
    tied: tuple[int, ...] = ()
    if v2:
        edges += _date_edges(scrape_ns, now_ns)
        tied = tuple(draw(st.lists(st.sampled_from(edges), min_size=1, max_size=3)))
    mutations = MUTATIONS + MUTATIONS_V2 if v2 else MUTATIONS
    for _ in range(n):
        spec = draw(_spec(scrape_ns, edges, v2, now_ns, tied))
        kind = draw(st.integers(0, 9))
        if kind == 0:  # invalid
            raws.append(draw(st.sampled_from(mutations))(spec))
            continue
        if identical_duplicates:  # the same (user, event_id) always carries the same content
            spec = pool.setdefault((spec.user, spec.event_id), spec)
        raws.append(render(spec, draw(st.integers(0, 2)) if kind == 1 else 0))
        specs.append(spec)
        if spec.type == "feedback" and kind < 4:  # another answer of the user on the scale, same ts
            assert spec.scale is not None
            twin = replace(spec, event_id=spec.event_id + "-tie", score=draw(_scores(spec.scale)))
            if identical_duplicates:
                twin = pool.setdefault((twin.user, twin.event_id), twin)
            raws.append(render(twin))
            specs.append(twin)
    n_src = draw(st.integers(1, 3))
    return Scenario(
        raws=raws,
        now_ns=now_ns,
        scrape_ns=scrape_ns,
        n_src=n_src,
        src_of=[draw(st.integers(0, n_src - 1)) for _ in raws],
        n_parts=draw(st.integers(2, 4)),
        part_seed=draw(st.integers(0, 2**16)),
        batch=draw(st.integers(1, 8)),
        perm=draw(st.permutations(range(len(raws)))),
        rng_seed=draw(st.integers(0, 2**32)),
        specs=specs,
    )
