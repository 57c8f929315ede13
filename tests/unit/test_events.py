"""CONTRACT section 1, rule by rule: `parse_event` and `is_future`, cross-checked with the model."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import model
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adoptstream.core.events import (
    FUTURE_TOLERANCE_NS,
    MAX_EVENT_BYTES,
    MAX_NESTING,
    Event,
    InvalidEvent,
    is_future,
    parse_event,
    parse_ts_ns,
)

DROP = object()
T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
T0_NS = T0_MS * 1_000_000


def msg(**fields: Any) -> bytes:
    """A valid `use` event with `fields` overridden (DROP removes a field)."""
    obj: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "type": "use", "feature": "search", "ts": T0_MS}
    for k, v in fields.items():
        if v is DROP:
            obj.pop(k, None)
        else:
            obj[k] = v
    return json.dumps(obj, ensure_ascii=False).encode()


def padded(total: int) -> bytes:
    """A valid event of exactly `total` bytes (padding in an unknown field)."""
    base = msg(pad="")
    return msg(pad="x" * (total - len(base)))


# (id, message, expected Event) -- every row must parse, and the model must agree
VALID: list[tuple[str, bytes, Event]] = [
    ("use", msg(), Event("e1", "u1", "use", "search", T0_NS, None)),
    ("exposure", msg(type="exposure"), Event("e1", "u1", "exposure", "search", T0_NS, None)),
    ("signup-no-feature", msg(type="signup", feature=DROP), Event("e1", "u1", "signup", None, T0_NS, None)),
    (
        "signup-junk-feature",
        msg(type="signup", feature="NOT a feature!\n"),
        Event("e1", "u1", "signup", None, T0_NS, None),
    ),
    (
        "signup-feature-wrong-type",
        msg(type="signup", feature=[1]),
        Event("e1", "u1", "signup", None, T0_NS, None),
    ),
    ("event_id-1", msg(event_id="x"), Event("x", "u1", "use", "search", T0_NS, None)),
    ("event_id-128", msg(event_id="e" * 128), Event("e" * 128, "u1", "use", "search", T0_NS, None)),
    ("event_id-128-astral", msg(event_id="😀" * 128), Event("😀" * 128, "u1", "use", "search", T0_NS, None)),
    ("user_id-256", msg(user_id="u" * 256), Event("e1", "u" * 256, "use", "search", T0_NS, None)),
    ("user_id-256-unicode", msg(user_id="用" * 256), Event("e1", "用" * 256, "use", "search", T0_NS, None)),
    (
        "user_id-any-unicode",
        msg(user_id="ü\u0301 \t😀"),
        Event("e1", "ü\u0301 \t😀", "use", "search", T0_NS, None),
    ),
    ("cohort-64", msg(cohort="c" * 64), Event("e1", "u1", "use", "search", T0_NS, "c" * 64)),
    ("cohort-1", msg(cohort="c"), Event("e1", "u1", "use", "search", T0_NS, "c")),
    (
        "cohort-space-unicode",
        msg(cohort="Welle 2 ü/東京"),
        Event("e1", "u1", "use", "search", T0_NS, "Welle 2 ü/東京"),
    ),
    ("cohort-null", msg(cohort=None), Event("e1", "u1", "use", "search", T0_NS, None)),
    ("feature-1", msg(feature="a"), Event("e1", "u1", "use", "a", T0_NS, None)),
    ("feature-digit", msg(feature="0"), Event("e1", "u1", "use", "0", T0_NS, None)),
    ("feature-128", msg(feature="a" * 128), Event("e1", "u1", "use", "a" * 128, T0_NS, None)),
    ("feature-punct", msg(feature="a_b.c:d/e-f"), Event("e1", "u1", "use", "a_b.c:d/e-f", T0_NS, None)),
    ("feature-trailing-dash", msg(feature="9-"), Event("e1", "u1", "use", "9-", T0_NS, None)),
    ("ts-int-0", msg(ts=0), Event("e1", "u1", "use", "search", 0, None)),
    ("ts-int-negative", msg(ts=-1), Event("e1", "u1", "use", "search", -1_000_000, None)),
    (
        "ts-float",
        msg(ts=1_700_000_000_000.5),
        Event("e1", "u1", "use", "search", 1_700_000_000_000_500_000, None),
    ),
    (
        "ts-float-ms-fraction",
        msg(ts=1_700_000_000_000.123),
        Event("e1", "u1", "use", "search", 1_700_000_000_000_123_000, None),
    ),
    (
        "ts-float-integral",
        msg(ts=1_700_000_000_000.0),
        Event("e1", "u1", "use", "search", 1_700_000_000_000_000_000, None),
    ),
    (
        "ts-float-exponent",
        b'{"event_id":"e1","user_id":"u1","type":"use","feature":"search","ts":1.5e3}',
        Event("e1", "u1", "use", "search", 1_500_000_000, None),
    ),
    ("ts-str-Z", msg(ts="2024-01-01T00:00:00Z"), Event("e1", "u1", "use", "search", T0_NS, None)),
    ("ts-str-lower", msg(ts="2024-01-01t00:00:00z"), Event("e1", "u1", "use", "search", T0_NS, None)),
    ("ts-str-space", msg(ts="2024-01-01 00:00:00Z"), Event("e1", "u1", "use", "search", T0_NS, None)),
    ("ts-str-+00:00", msg(ts="2024-01-01T00:00:00+00:00"), Event("e1", "u1", "use", "search", T0_NS, None)),
    ("ts-str-+05:30", msg(ts="2024-01-01T05:30:00+05:30"), Event("e1", "u1", "use", "search", T0_NS, None)),
    ("ts-str--08:00", msg(ts="2023-12-31T16:00:00-08:00"), Event("e1", "u1", "use", "search", T0_NS, None)),
    (
        "ts-str-ms",
        msg(ts="2024-01-01T00:00:00.123Z"),
        Event("e1", "u1", "use", "search", T0_NS + 123_000_000, None),
    ),
    (
        "ts-str-us",
        msg(ts="2024-01-01T00:00:00.123456Z"),
        Event("e1", "u1", "use", "search", T0_NS + 123_456_000, None),
    ),
    (
        "ts-str-ns",
        msg(ts="2024-01-01T00:00:00.123456789Z"),
        Event("e1", "u1", "use", "search", T0_NS + 123_456_789, None),
    ),
    (
        "ts-str-ns-offset",
        msg(ts="2024-01-01T05:30:00.000000001+05:30"),
        Event("e1", "u1", "use", "search", T0_NS + 1, None),
    ),
    (
        "ts-str-year-1",
        msg(ts="0001-01-01T00:00:00Z"),
        Event("e1", "u1", "use", "search", -62_135_596_800 * 10**9, None),
    ),
    (
        "ts-str-leap-day",
        msg(ts="2024-02-29T00:00:00Z"),
        Event("e1", "u1", "use", "search", 1_709_164_800 * 10**9, None),
    ),
    (
        "unknown-fields",
        msg(extra={"a": [1, 2, {"b": None}]}, v=2, schema="x"),
        Event("e1", "u1", "use", "search", T0_NS, None),
    ),
    ("whitespace", b" \n\t" + msg() + b"\r\n ", Event("e1", "u1", "use", "search", T0_NS, None)),
    (
        "surrogate-pair-escape",
        msg(user_id=DROP)[:-1] + b', "user_id": "\\ud83d\\ude00"}',
        Event("e1", "😀", "use", "search", T0_NS, None),
    ),
    ("exactly-65536-bytes", padded(MAX_EVENT_BYTES), Event("e1", "u1", "use", "search", T0_NS, None)),
]

# (id, message) -- every row must be rejected, by the implementation and by the model
INVALID: list[tuple[str, bytes | None]] = [
    ("event_id-empty", msg(event_id="")),
    ("event_id-129", msg(event_id="e" * 129)),
    ("event_id-129-astral", msg(event_id="😀" * 129)),
    ("event_id-missing", msg(event_id=DROP)),
    ("event_id-int", msg(event_id=1)),
    ("event_id-null", msg(event_id=None)),
    ("user_id-empty", msg(user_id="")),
    ("user_id-257", msg(user_id="u" * 257)),
    ("user_id-missing", msg(user_id=DROP)),
    ("user_id-list", msg(user_id=["u1"])),
    ("type-unknown", msg(type="click")),
    ("type-case", msg(type="Use")),
    ("type-missing", msg(type=DROP)),
    ("type-int", msg(type=1)),
    ("feature-missing-use", msg(feature=DROP)),
    ("feature-missing-exposure", msg(type="exposure", feature=DROP)),
    ("feature-null", msg(feature=None)),
    ("feature-empty", msg(feature="")),
    ("feature-upper", msg(feature="Search")),
    ("feature-all-upper", msg(feature="ABC")),
    ("feature-leading-underscore", msg(feature="_a")),
    ("feature-leading-dash", msg(feature="-a")),
    ("feature-leading-dot", msg(feature=".a")),
    ("feature-trailing-newline", msg(feature="abc\n")),
    ("feature-space", msg(feature="a b")),
    ("feature-129", msg(feature="a" * 129)),
    ("feature-non-ascii", msg(feature="é")),
    ("feature-int", msg(feature=1)),
    ("ts-missing", msg(ts=DROP)),
    ("ts-null", msg(ts=None)),
    ("ts-true", msg(ts=True)),
    ("ts-false", msg(ts=False)),
    ("ts-naive", msg(ts="2024-01-01T00:00:00")),
    ("ts-naive-fraction", msg(ts="2024-01-01T00:00:00.123")),
    ("ts-date-only", msg(ts="2024-01-01")),
    ("ts-words", msg(ts="yesterday")),
    ("ts-empty-string", msg(ts="")),
    ("ts-digits-string", msg(ts="1704067200000")),
    ("ts-bad-date", msg(ts="2023-02-29T00:00:00Z")),
    ("ts-bad-hour", msg(ts="2024-01-01T25:00:00Z")),
    ("ts-bad-offset", msg(ts="2024-01-01T00:00:00+24:00")),
    ("ts-list", msg(ts=[T0_MS])),
    ("ts-object", msg(ts={"ms": T0_MS})),
    ("ts-non-ascii-digits", msg(ts="２０２４-01-01T00:00:00Z")),
    ("cohort-empty", msg(cohort="")),
    ("cohort-65", msg(cohort="c" * 65)),
    ("cohort-tab", msg(cohort="a\tb")),
    ("cohort-newline", msg(cohort="a\n")),
    ("cohort-del", msg(cohort="\x7f")),
    ("cohort-zero-width-space", msg(cohort="a\u200bb")),
    ("cohort-int", msg(cohort=5)),
    ("cohort-list", msg(cohort=["a"])),
    ("cohort-false", msg(cohort=False)),
    ("nan", msg(ts=DROP)[:-1] + b', "ts": NaN}'),
    ("infinity", msg(ts=DROP)[:-1] + b', "ts": Infinity}'),
    ("minus-infinity", msg(ts=DROP)[:-1] + b', "ts": -Infinity}'),
    ("nan-in-unknown-field", msg()[:-1] + b', "x": NaN}'),
    ("lone-high-surrogate", msg(user_id=DROP)[:-1] + b', "user_id": "\\ud800"}'),
    ("lone-low-surrogate-unknown-field", msg()[:-1] + b', "x": "a\\udc00"}'),
    ("lone-surrogate-in-key", msg()[:-1] + b', "\\ud800": 1}'),
    ("surrogate-utf8-bytes", msg(user_id=DROP)[:-1] + b', "user_id": "\xed\xa0\x80"}'),
    ("invalid-utf8", msg(user_id=DROP)[:-1] + b', "user_id": "\xff"}'),
    ("bom", b"\xef\xbb\xbf" + msg()),
    ("trailing-garbage", msg() + b"x"),
    ("two-objects", msg() + msg()),
    ("trailing-comma", msg()[:-1] + b",}"),
    ("single-quotes", msg().replace(b'"', b"'")),
    ("comment", b"/* c */" + msg()),
    ("control-char-in-string", msg(user_id=DROP)[:-1] + b', "user_id": "a\x01"}'),
    ("truncated", msg()[:-1]),
    ("array", b"[" + msg() + b"]"),
    ("string", b'"event"'),
    ("number", b"1"),
    ("null", b"null"),
    ("empty-bytes", b""),
    ("none", None),
    ("65537-bytes", padded(MAX_EVENT_BYTES + 1)),
]


@pytest.mark.parametrize(("raw", "expected"), [pytest.param(r, e, id=i) for i, r, e in VALID])
def test_valid(raw: bytes, expected: Event) -> None:
    assert parse_event(raw) == expected
    m = model.parse(raw)
    assert m is not None
    assert (m.event_id, m.user_id, m.type, m.feature, m.ts_ns, m.cohort) == (
        expected.event_id,
        expected.user_id,
        expected.type,
        expected.feature,
        expected.ts_ns,
        expected.cohort,
    )


@pytest.mark.parametrize("raw", [pytest.param(r, id=i) for i, r in INVALID])
def test_invalid(raw: bytes | None) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert info.value.reason  # a short, non-empty reason for the DLQ header
    assert model.parse(raw) is None


def test_size_limit_is_bytes_not_characters() -> None:
    base = msg(pad="")
    # 3-byte characters: fewer than 65,536 characters but more than 65,536 bytes
    n = (MAX_EVENT_BYTES - len(base)) // 3 + 1
    raw = msg(pad="用" * n)
    assert len(raw.decode()) < MAX_EVENT_BYTES < len(raw)
    with pytest.raises(InvalidEvent):
        parse_event(raw)
    assert model.parse(raw) is None


# -- is_future: "more than 5 minutes ahead of the monitor's clock" ------------------------------------


@pytest.mark.parametrize(
    ("delta_ns", "future"),
    [
        (-(10**15), False),
        (0, False),
        (FUTURE_TOLERANCE_NS - 1, False),
        (FUTURE_TOLERANCE_NS, False),  # exactly +5 min: not more than 5 min ahead
        (FUTURE_TOLERANCE_NS + 1, True),  # +5 min + 1 ns
        (10**18, True),
    ],
)
def test_is_future_boundary(delta_ns: int, future: bool) -> None:
    now = T0_NS + 123_456_789
    assert FUTURE_TOLERANCE_NS == 300 * 10**9
    assert is_future(now + delta_ns, now) is future


def test_future_boundary_through_iso_strings() -> None:
    """The +5 min boundary with ns precision, end to end from the message text."""
    now = T0_NS
    at = parse_event(msg(ts="2024-01-01T00:05:00.000000000Z"))
    beyond = parse_event(msg(ts="2024-01-01T00:05:00.000000001Z"))
    assert not is_future(at.ts_ns, now)
    assert is_future(beyond.ts_ns, now)
    assert [o for o, _ in model.classify([(0, msg(ts="2024-01-01T00:05:00Z"))], now)] == ["accepted"]
    assert [o for o, _ in model.classify([(0, msg(ts="2024-01-01T00:05:00.000000001Z"))], now)] == ["future"]


# -- differential: implementation vs model on generated messages ------------------------------------

_keys = st.sampled_from(["event_id", "user_id", "type", "feature", "ts", "cohort", "x"])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=6),
)
_strings = st.one_of(
    st.text(max_size=3),
    st.sampled_from(
        ["signup", "exposure", "use", "search", "a_b.c", "Ab", "abc\n", "x" * 128, "x" * 129, "c" * 65]
    ),
    st.text(alphabet="abc0_.:/-", min_size=0, max_size=130),
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01t05:30:00.5+05:30",
            "2024-02-30T00:00:00Z",
            "1999-12-31 23:59:59.999999999-01:00",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01",
        ]
    ),
)
_values = st.one_of(_scalars, _strings, st.lists(_scalars, max_size=2))


@st.composite
def _objects(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": draw(st.sampled_from(["e1", "e" * 128])),
        "user_id": draw(st.sampled_from(["u1", "ü😀"])),
        "type": draw(st.sampled_from(["signup", "exposure", "use"])),
        "feature": "search",
        "ts": draw(st.one_of(st.integers(-(10**13), 10**13), st.sampled_from(["2024-01-01T00:00:00Z"]))),
    }
    for _ in range(draw(st.integers(0, 3))):
        key = draw(_keys)
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(_values)
    return obj


_v2_values = st.one_of(
    _values,
    st.sampled_from(["nps", "csat", "ces", "NPS", 0, -1, 1, 5, 7, 10, 11, 86_400_000, 86_400_001]),
)


@st.composite
def _objects_v2(draw: st.DrawFn) -> dict[str, Any]:
    """Objects of every type, with v2 fields (right, wrong or ignored) on any of them."""
    obj = draw(_objects())
    obj["type"] = draw(st.sampled_from(["signup", "exposure", "use", "feedback", "feedback"]))
    if obj["type"] == "feedback" and draw(st.booleans()):
        obj.update(scale=draw(st.sampled_from(["nps", "csat", "ces"])), score=draw(st.integers(-1, 11)))
    for key in draw(st.lists(st.sampled_from(["scale", "score", "duration_ms", "feature"]), max_size=3)):
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(_v2_values)
    return obj


_MODEL_V2 = "feedback" in getattr(model, "TYPES", ())  # the model of section 3 (tests/unit/model.py)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_objects_v2())
def test_v2_parser_agrees_with_model(obj: dict[str, Any]) -> None:
    if not _MODEL_V2:
        pytest.skip("the reference model does not read section 3 yet")
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    expected = model.parse(raw)
    try:
        got = parse_event(raw)
    except InvalidEvent:
        assert expected is None, f"implementation rejects, model accepts {raw!r}"
        return
    assert expected is not None, f"implementation accepts, model rejects {raw!r}"
    fields = ("event_id", "user_id", "type", "feature", "ts_ns", "cohort", "scale", "score", "duration_ms")
    assert [getattr(got, f) for f in fields] == [getattr(expected, f) for f in fields]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_objects())
def test_parser_agrees_with_model(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    expected = model.parse(raw)
    try:
        got = parse_event(raw)
    except InvalidEvent:
        assert expected is None, f"implementation rejects, model accepts {raw!r}"
        return
    assert expected is not None, f"implementation accepts, model rejects {raw!r}"
    assert (got.event_id, got.user_id, got.type, got.feature, got.ts_ns, got.cohort) == (
        expected.event_id,
        expected.user_id,
        expected.type,
        expected.feature,
        expected.ts_ns,
        expected.cohort,
    )


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())))
def test_no_input_crashes_the_parser(raw: bytes) -> None:
    """No input may stop a worker: parse_event either returns an Event or raises InvalidEvent."""
    with contextlib.suppress(InvalidEvent):
        assert isinstance(parse_event(raw), Event)


@pytest.mark.parametrize(
    "ts",
    [
        b"1e400",
        b"-1e400",
        b"123456789012345678901234567890",
        b"-9223372036854775809",
        b"1" * 5000,
        b"-0.0",
        b"5e-324",
    ],
)
def test_extreme_numbers_do_not_crash(ts: bytes) -> None:
    raw = msg(ts=DROP)[:-1] + b', "ts": ' + ts + b"}"
    with contextlib.suppress(InvalidEvent):
        parse_event(raw)


# -- strictness of ts strings; the nesting cap --------------------------------------------------------


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """A valid event whose ignored field "x" nests `depth` containers (the event object is one more)."""
    return msg()[:-1] + b', "x": ' + opener * depth + closer * depth + b"}"


def test_nesting_up_to_the_cap_is_ignored_like_any_field() -> None:
    assert parse_event(nested(MAX_NESTING - 1)).user_id == "u1"
    deep_objects = (
        msg()[:-1] + b', "x": ' + b'{"k":' * (MAX_NESTING - 1) + b"null" + b"}" * (MAX_NESTING - 1) + b"}"
    )
    assert parse_event(deep_objects).event_id == "e1"


@pytest.mark.parametrize("depth", [MAX_NESTING, 2000, 30_000])
def test_nesting_past_the_cap_is_invalid_with_its_reason(depth: int) -> None:
    raw = nested(depth)
    assert len(raw) <= MAX_EVENT_BYTES
    with pytest.raises(InvalidEvent, match=f"JSON nested deeper than {MAX_NESTING} levels"):
        parse_event(raw)


def test_many_brackets_within_the_cap_are_valid() -> None:
    """Over MAX_NESTING brackets in all, none deep: the checked path takes it."""
    raw = msg()[:-1] + b', "x": [' + b",".join([b"[]"] * 3000) + b"]}"
    assert parse_event(raw).user_id == "u1"


def test_hostile_nesting_is_as_cheap_as_a_flat_message() -> None:
    """64 KiB of nesting costs about what 64 KiB of flat text does (both in C), not a parse in Python."""
    deep = nested(32_000)[:MAX_EVENT_BYTES]
    flat = msg()[:-1] + b', "x": "' + b"a" * (len(deep) - len(msg()) - 8) + b'"}'

    def cost(raw: bytes) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(20):
                with contextlib.suppress(InvalidEvent):
                    parse_event(raw)
            best = min(best, time.perf_counter() - started)
        return best / 20

    assert cost(deep) < max(20 * cost(flat), 0.002)


@pytest.mark.parametrize(
    "deep_tail",
    [
        b"[" * 1000 + b"]" * 999,  # unclosed
        b"[" * 1000 + b"NaN" + b"]" * 1000,
        b"[" * 1000 + b'"\\ud800"' + b"]" * 1000,  # lone surrogate, deep inside
        b"[" * 1000 + b"1," + b"]" * 1000,  # trailing comma
        b"[" * 1000 + b"]" * 1000 + b"}garbage",
    ],
)
def test_deeply_nested_invalid_json_is_invalid(deep_tail: bytes) -> None:
    raw = msg()[:-1] + b', "x": ' + deep_tail + (b"" if deep_tail.endswith(b"garbage") else b"}")
    with pytest.raises(InvalidEvent, match="not strict JSON"):
        parse_event(raw)


def test_deeply_nested_cohort_is_invalid() -> None:
    raw = msg()[:-1] + b', "cohort": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(InvalidEvent, match="cohort"):
        parse_event(raw)


def test_offset_with_fraction_is_not_misparsed() -> None:
    text = "2024-01-01T00:00:00+05:30:00.1234567"
    exact = T0_NS - (5 * 3600 + 30 * 60) * 10**9 - 123_456_700
    try:
        got = parse_event(msg(ts=text)).ts_ns
    except InvalidEvent:
        return
    assert got == exact


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01T00:00:00 +05:30",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00+05:30:15",
        "2024-01-01T00:00:00+05:75",
    ],
)
def test_non_iso_strings_are_invalid(text: str) -> None:
    assert model.parse(msg(ts=text)) is None
    with pytest.raises(InvalidEvent):
        parse_event(msg(ts=text))


# -- the RFC 3339 fast path gives what the general ISO path gives ---------------------------------

_digits = st.text(alphabet="0123456789", min_size=1, max_size=4)


def _fast_and_general(text: str) -> bool:
    """Does parse_ts_ns (fast path first) judge `text` exactly like the general ISO path?"""
    from adoptstream.core.events import _parse_iso_ns

    results: list[object] = []
    for parse in (parse_ts_ns, _parse_iso_ns):
        try:
            results.append(parse(text))
        except InvalidEvent:
            results.append(InvalidEvent)
    return results[0] == results[1]


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.datetimes(timezones=st.timezones()) | st.datetimes(),
    st.sampled_from(["T", "t"]),
    st.integers(0, 9),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-11:45", "+23:59", "+24:00", "+05:60"]),
)
def test_fast_iso_path_agrees_with_general_path(when, sep: str, digits: int, zone: str) -> None:
    text = when.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    if digits:
        text += "." + f"{when.microsecond:06d}{when.microsecond % 997:03d}"[:digits]
    text += zone
    assert _fast_and_general(text), text


@settings(max_examples=1000)
@given(
    st.tuples(_digits, _digits, _digits, _digits, _digits, _digits),
    st.sampled_from(["Z", "+00:00", "-23:59", "+99:00", "+05:99"]),
)
def test_fast_iso_path_range_checks_agree(parts: tuple[str, ...], zone: str) -> None:
    y, mo, d, h, mi, s = parts
    text = f"{y.zfill(4)}-{mo.zfill(2)}-{d.zfill(2)}T{h.zfill(2)}:{mi.zfill(2)}:{s.zfill(2)}{zone}"
    assert _fast_and_general(text), text


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-04-31T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z",
        "2024-01-01T00:00:60Z",
        "2024-01-01T00:00:00+24:00",
    ],
)
def test_out_of_range_rfc3339_is_invalid(text: str) -> None:
    with pytest.raises(InvalidEvent):
        parse_ts_ns(text)


def test_leap_day_and_offsets_exact() -> None:
    assert parse_ts_ns("2024-02-29T12:00:00.000000001+05:30") == (1_709_208_000 - 19_800) * 10**9 + 1
    assert parse_ts_ns("1969-12-31T23:59:59.5-00:00") == -500_000_000


def test_non_ascii_digits_are_invalid() -> None:
    with pytest.raises(InvalidEvent):
        parse_ts_ns("٢٠٢٤-01-01T00:00:00Z")


@settings(max_examples=3000)
@given(
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**13), 10**13).map(lambda ms: ms + 0.001 * (ms % 1000))
)
def test_float_fast_path_is_exact(ts: float) -> None:
    """Floats with at most six decimals skip Decimal; every float gives Decimal's exact answer."""
    from decimal import Decimal

    assert parse_ts_ns(ts) == int((Decimal(repr(ts)) * 1_000_000).to_integral_value())


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01T00:00:00.+05:30",
        "2024-01-01T00:00:00.1234567890Z",
        "2024-01-01T00:00:00,5Z",
        "2024-01-01T00:00:00.5 Z",
        "2024-01-01T00:00:00.٥Z",
        "2024-01-01T00:00:00.5+0530",
        "2024-01-01T00:00:00.5+05",
        "2024-01-01X00:00:00Z",
        "2024-01-01T00:00:00.55:30",
        "2024-01-01T00:00:05:30",
    ],
)
def test_fast_iso_path_odd_shapes_agree(text: str) -> None:
    assert _fast_and_general(text), text


# -- the msgspec fast path judges like the checked (orjson) path and the model ----------------------


def _judged(parse: Any, raw: bytes | None) -> object:
    try:
        return parse(raw)
    except InvalidEvent:
        return InvalidEvent


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_objects_v2(), st.integers(0, 10_000), st.binary(min_size=0, max_size=3), st.booleans())
def test_fast_path_agrees_with_checked_path(
    obj: dict[str, Any], where: int, junk: bytes, replace: bool
) -> None:
    from adoptstream.core.events import _parse_checked

    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    i = where % (len(raw) + 1)
    mutated = raw[:i] + junk + raw[i + (len(junk) if replace else 0) :]
    assert _judged(parse_event, mutated) == _judged(_parse_checked, mutated), mutated


@pytest.mark.parametrize(
    "extra",
    [
        b'"\xff"',  # junk byte in a string msgspec skips without decoding
        b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8
        b'"\\udc00"',  # lone surrogate escapes
        b'"\\ud800\\u0041"',
        b'"a\nb"',  # raw control character
        b"[1,]",
        b"01",
        b"NaN",
    ],
)
def test_bad_json_in_an_ignored_field_is_invalid(extra: bytes) -> None:
    raw = msg()[:-1] + b', "x": ' + extra + b"}"
    assert model.parse(raw) is None
    with pytest.raises(InvalidEvent, match="JSON"):
        parse_event(raw)


def test_fast_path_hands_odd_but_valid_events_to_the_checked_path() -> None:
    # a signup's feature is ignored whatever its type; unicode survives both paths
    assert parse_event(msg(type="signup", feature=5)).feature is None
    assert parse_event(msg(user_id="田中😀", cohort="Welle ü")).user_id == "田中😀"
    # valid JSON numbers beyond a double in an ignored field: valid, as the model says
    raw = msg()[:-1] + b', "x": 1e400}'
    assert model.parse(raw) is not None
    assert parse_event(raw).user_id == "u1"
    with pytest.raises(InvalidEvent):
        parse_event(msg(ts=True))


# -- section 3.1: feedback and task durations -----------------------------------------------------------


def _answer(score: bytes, scale: bytes = b'"nps"', extra: bytes = b"") -> bytes:
    return b'{"event_id":"e","user_id":"u","type":"feedback","ts":1,"scale":%s,"score":%s%s}' % (
        scale,
        score,
        extra,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_answer(b"5"), (None, "nps", 5)),
        (_answer(b"-0"), (None, "nps", 0)),  # a JSON integer: no fraction or exponent part
        (_answer(b"0"), (None, "nps", 0)),
        (_answer(b"10"), (None, "nps", 10)),
        (_answer(b"1", b'"csat"'), (None, "csat", 1)),
        (_answer(b"5", b'"csat"'), (None, "csat", 5)),
        (_answer(b"7", b'"ces"'), (None, "ces", 7)),
        (_answer(b"3", extra=b',"feature":"search"'), ("search", "nps", 3)),
        (_answer(b"3", extra=b',"feature":null'), (None, "nps", 3)),  # null: about the whole product
        (_answer(b"3", extra=b',"duration_ms":"x","cohort":"w"'), (None, "nps", 3)),  # ignored there
    ],
)
def test_valid_answers(raw: bytes, expected: tuple[str | None, str, int]) -> None:
    for parse in (parse_event, _parse_checked_path()):
        event = parse(raw)
        assert (event.feature, event.scale, event.score) == expected
        assert event.type == "feedback" and event.duration_ms is None


@pytest.mark.parametrize(
    "raw",
    [
        _answer(b"5.0"),
        _answer(b"5e0"),
        _answer(b"5E+0"),
        _answer(b"-0.0"),
        _answer(b"true"),
        _answer(b"false"),
        _answer(b'"5"'),
        _answer(b"null"),
        _answer(b"[5]"),
        _answer(b"11"),
        _answer(b"-1"),
        _answer(b"99999999999999999999999"),
        _answer(b"0", b'"csat"'),
        _answer(b"6", b'"csat"'),
        _answer(b"0", b'"ces"'),
        _answer(b"8", b'"ces"'),
        _answer(b"-0", b'"csat"'),
        _answer(b"5", b'"NPS"'),
        _answer(b"5", b'"stars"'),
        _answer(b"5", b"null"),
        _answer(b"5", b'["nps"]'),
        _answer(b"5", extra=b',"feature":"Search"'),
        _answer(b"5", extra=b',"feature":5'),
        b'{"event_id":"e","user_id":"u","type":"feedback","ts":1,"scale":"nps"}',
        b'{"event_id":"e","user_id":"u","type":"feedback","ts":1,"score":5}',
    ],
)
def test_invalid_answers(raw: bytes) -> None:
    for parse in (parse_event, _parse_checked_path()):
        with pytest.raises(InvalidEvent):
            parse(raw)


def _use(extra: bytes, etype: bytes = b"use") -> bytes:
    return b'{"event_id":"e","user_id":"u","type":"%s","feature":"f","ts":1%s}' % (etype, extra)


@pytest.mark.parametrize(
    ("raw", "duration_ms"),
    [
        (_use(b""), None),
        (_use(b',"duration_ms":0'), 0),
        (_use(b',"duration_ms":-0'), 0),
        (_use(b',"duration_ms":500'), 500),
        (_use(b',"duration_ms":86400000'), 86_400_000),
        # other types ignore the field, whatever it holds
        (_use(b',"duration_ms":null', b"exposure"), None),
        (_use(b',"duration_ms":-5.5', b"exposure"), None),
        (b'{"event_id":"e","user_id":"u","type":"signup","ts":1,"duration_ms":"x"}', None),
        (_answer(b"1", extra=b',"duration_ms":true'), None),
    ],
)
def test_durations(raw: bytes, duration_ms: int | None) -> None:
    for parse in (parse_event, _parse_checked_path()):
        assert parse(raw).duration_ms == duration_ms


@pytest.mark.parametrize(
    "value", [b"null", b"1.0", b"1e3", b"-1", b"86400001", b'"5"', b"true", b"[1]", b"{}", b"1e400"]
)
def test_any_other_duration_makes_a_use_invalid(value: bytes) -> None:
    raw = _use(b',"duration_ms":' + value)
    for parse in (parse_event, _parse_checked_path()):
        with pytest.raises(InvalidEvent, match=r"duration_ms|JSON"):  # 1e400 is beyond a double
            parse(raw)


def _parse_checked_path() -> Any:
    from adoptstream.core.events import _parse_checked

    return _parse_checked
