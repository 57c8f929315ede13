"""TrafficGenerator: deterministic, contract-valid, realistic mix of formats, cohorts and duplicates.

Feedback events and `duration_ms` (CONTRACT section 3.1) are checked against the contract's text here:
`parse_event` only learns them with the v2 worker.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter

import orjson
import pytest

from adoptstream.core.events import FEATURE_RE, NS_PER_MS, Event, InvalidEvent, parse_event
from adoptstream_dev.generate import FEATURES, SCALES, TrafficGenerator, format_ts, hour_weight

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
N = 20_000


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(TrafficGenerator(42, 10_000, now_ms=NOW_MS).events(N))


def parse(line: bytes) -> Event:
    """`parse_event`, plus CONTRACT 3.1's feedback rules for the answers a v1 parser rejects."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or obj.get("type") != "feedback":
        event = parse_event(line)
        if event.type == "use" and "duration_ms" in obj:
            duration = obj["duration_ms"]
            assert type(duration) is int and 0 <= duration <= 86_400_000, line
        return event
    low, high = SCALES[obj["scale"]]
    assert type(obj["score"]) is int and low <= obj["score"] <= high, line
    assert b'"score":' + str(obj["score"]).encode() in line  # a plain integer, no fraction or exponent
    assert "feature" not in obj or FEATURE_RE.fullmatch(obj["feature"]), line
    # the rest of the event (ids, ts, cohort) follows section 1: check it as a use of the same feature
    as_use = parse_event(orjson.dumps({**obj, "type": "use", "feature": obj.get("feature", "x")}))
    return Event(as_use.event_id, as_use.user_id, "feedback", obj.get("feature"), as_use.ts_ns, None)


def ts_kind(line: bytes) -> str:
    ts = orjson.loads(line)["ts"]
    if isinstance(ts, str):
        return "rfc3339-z" if ts.endswith("Z") else "rfc3339-offset"
    return type(ts).__name__


def test_same_seed_same_lines(lines: list[bytes]) -> None:
    assert list(TrafficGenerator(42, 10_000, now_ms=NOW_MS).events(N)) == lines
    assert list(TrafficGenerator(43, 10_000, now_ms=NOW_MS).events(200)) != lines[:200]


def test_exact_count_and_every_line_valid(lines: list[bytes]) -> None:
    assert len(lines) == N
    for line in lines:
        parse(line)  # raises on any contract violation


def test_sizes_typical_150_to_300_bytes(lines: list[bytes]) -> None:
    sizes = [len(line) for line in lines]
    assert 150 <= statistics.median(sizes) <= 300
    in_range = sum(150 <= s <= 300 for s in sizes)
    assert in_range / len(sizes) > 0.95


def test_times_spread_over_the_window_and_never_ahead(lines: list[bytes]) -> None:
    times = [parse(line).ts_ns // NS_PER_MS for line in lines]
    assert max(times) <= NOW_MS + 5 * 60_000
    assert max(times) > NOW_MS - 3_600_000  # traffic runs right up to now
    assert min(times) < NOW_MS - 25 * 86_400_000  # ... and starts about 30 days back
    out_of_order = sum(b < a for a, b in itertools.pairwise(times))
    assert out_of_order > 0


def test_working_hours_busier_than_nights(lines: list[bytes]) -> None:
    hours = Counter(parse(line).ts_ns // NS_PER_MS // 3_600_000 % 24 for line in lines)
    day = sum(hours[h] for h in range(10, 17))
    night = sum(hours[h] for h in (0, 1, 2, 3, 4, 22, 23))
    assert day > 2 * night
    assert hour_weight(13 * 3_600_000) > hour_weight(2 * 3_600_000)


def test_all_timestamp_formats_present(lines: list[bytes]) -> None:
    kinds = Counter(ts_kind(line) for line in lines)
    assert {"int", "float", "rfc3339-z", "rfc3339-offset"} <= set(kinds)


def test_format_ts_round_trips() -> None:
    ms = 1_767_225_600_123
    for style, offset in (("int", 0), ("z", 0), ("offset", 330), ("offset", -420)):
        value = format_ts(ms, style, offset)
        assert parse_event(orjson.dumps(_event(value))).ts_ns == ms * NS_PER_MS, (style, value)
    assert format_ts(ms, "offset", 330).endswith("+05:30")
    as_float = format_ts(ms, "float", frac=500)
    assert parse_event(orjson.dumps(_event(as_float))).ts_ns == ms * NS_PER_MS + 500_000


def _event(ts: object) -> dict[str, object]:
    return {"event_id": "e", "user_id": "u", "type": "use", "feature": "search", "ts": ts}


def test_stories_types_features_cohorts(lines: list[bytes]) -> None:
    events = [parse(line) for line in lines]
    types = Counter(e.type for e in events)
    assert types["signup"] > 0 and types["exposure"] > types["signup"] and types["use"] > types["exposure"]
    uses = Counter(e.feature for e in events if e.type == "use")
    names = [f.name for f in FEATURES]
    assert set(uses) <= set(names) and len(uses) >= 10
    assert uses[names[0]] > 5 * uses[names[-1]]  # skewed popularity
    cohorts = {e.cohort for e in events if e.type == "exposure"}
    assert {"pilot", "wave-1", "wave-2", None} <= cohorts
    assert any(c and c.startswith("dept-") for c in cohorts)
    users = {e.user_id for e in events}
    assert len(users) > 300
    assert any(not u.isascii() for u in users)


def test_first_use_follows_exposure_after_a_delay(lines: list[bytes]) -> None:
    exposed: dict[tuple[str, str], int] = {}
    first_use: dict[tuple[str, str], int] = {}
    for line in lines:
        e = parse(line)
        key = (e.user_id, e.feature or "")
        if e.type == "exposure":
            exposed.setdefault(key, e.ts_ns)
        elif e.type == "use":
            first_use[key] = min(first_use.get(key, e.ts_ns), e.ts_ns)
    delays = [(first_use[k] - t) / 1e9 for k, t in exposed.items() if k in first_use]
    assert len(delays) > 100
    assert 0 < len(delays) / len(exposed) < 0.9  # only a fraction adopts
    assert 60 < statistics.median(delays) < 7 * 86_400  # minutes to days


def test_event_ids_unique_per_user(lines: list[bytes]) -> None:
    ids = Counter((o["user_id"], o["event_id"]) for o in map(orjson.loads, set(lines)))
    assert max(ids.values()) == 1


def test_duplicates_only_when_asked() -> None:
    def dups(ratio: float) -> int:
        out = list(TrafficGenerator(1, 1000, now_ms=NOW_MS, duplicate_ratio=ratio).events(5000))
        return len(out) - len(set(out))

    assert dups(0.0) == 0
    assert 100 < dups(0.05) < 500


def test_invalid_ratio() -> None:
    out = list(TrafficGenerator(5, 1000, now_ms=NOW_MS, invalid_ratio=0.1).events(5000))
    invalid = 0
    for line in out:
        try:
            parse(line)
        except InvalidEvent:
            invalid += 1
    assert 300 < invalid < 700


def test_live_continues_at_the_given_time() -> None:
    gen = TrafficGenerator(3, 500, now_ms=NOW_MS)
    list(gen.events(2000))
    later = NOW_MS + 60_000
    live = [parse(gen.live(later)) for _ in range(2000)]
    assert all(e.ts_ns <= (later + 5 * 60_000) * NS_PER_MS for e in live)
    assert sum(e.ts_ns >= (later - 1000) * NS_PER_MS for e in live) > 1500  # mostly current
    assert Counter(e.type for e in live)["use"] > 1000


def test_live_from_scratch_produces_valid_traffic() -> None:
    gen = TrafficGenerator(9, 200)
    types = Counter(parse(gen.live(NOW_MS + 100 * i)).type for i in range(3000))
    assert 0 < types["signup"] < 100 and types["exposure"] > 0 and types["use"] > 2000
    assert len(gen.users) <= 200


def test_arguments_checked() -> None:
    with pytest.raises(ValueError):
        TrafficGenerator(users=0)
    with pytest.raises(ValueError):
        TrafficGenerator(duplicate_ratio=1.5)


def test_feedback_answers_follow_the_contract_and_each_feature(lines: list[bytes]) -> None:
    answers = [orjson.loads(line) for line in lines if b'"feedback"' in line]
    answers = [a for a in answers if a["type"] == "feedback"]
    assert 0.005 < len(answers) / len(lines) < 0.03
    assert {a["scale"] for a in answers} == set(SCALES)
    product = [a for a in answers if "feature" not in a]
    assert 0.1 < len(product) / len(answers) < 0.4  # some about the product as a whole, mostly NPS
    assert Counter(a["scale"] for a in product).most_common(1)[0][0] == "nps"
    for a in answers:
        parse(orjson.dumps(a))
    # every score of a scale shows up somewhere, and a well-liked feature scores above a disliked one
    many = [
        orjson.loads(x) for x in TrafficGenerator(7, 3000, now_ms=NOW_MS, feedback_ratio=0.3).events(40_000)
    ]
    csat: dict[str, list[int]] = {}
    for a in many:
        if a["type"] == "feedback" and a["scale"] == "csat" and "feature" in a:
            csat.setdefault(a["feature"], []).append(a["score"])
    assert {s for scores in csat.values() for s in scores} == {1, 2, 3, 4, 5}
    assert statistics.mean(csat["search"]) > statistics.mean(csat["ai/assist"]) + 0.5
    nps = [a["score"] for a in many if a["type"] == "feedback" and a["scale"] == "nps"]
    assert min(nps) <= 4 and max(nps) == 10


def test_most_uses_carry_a_task_duration(lines: list[bytes]) -> None:
    uses = [o for o in map(orjson.loads, lines) if o["type"] == "use"]
    timed = [u for u in uses if "duration_ms" in u]
    assert 0.6 < len(timed) / len(uses) < 0.8
    by_feature: dict[str, list[int]] = {}
    for u in timed:
        assert type(u["duration_ms"]) is int and 0 <= u["duration_ms"] <= 86_400_000
        by_feature.setdefault(u["feature"], []).append(u["duration_ms"])
    # log-normal around each feature's median: a quick toggle is faster than an AI-assisted task
    assert statistics.median(by_feature["dark-mode"]) < 5_000 < statistics.median(by_feature["ai/assist"])
    assert max(max(d) for d in by_feature.values()) > 10 * statistics.median(by_feature["search"])
    assert all(b'"feedback"' not in line for line in TrafficGenerator(1, 100, feedback_ratio=0).events(2000))
