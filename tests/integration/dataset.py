"""A hostile data set for exactness tests, and its expected numbers: from the pure core applied in
order (`expected_samples`), or from the brute-force model of the contract (`expected_model_samples`)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from adoptstream.core.entries import FutureEntry, InvalidEntry, event_entry
from adoptstream.core.events import InvalidEvent, is_future, parse_event
from adoptstream.core.state import SourceOutcomes, UserState
from adoptstream.core.totals import AdoptionTotals
from adoptstream.exposition.collector import AdoptionCollector
from adoptstream_dev.testing import Samples, contract_only, parse_samples
from tests.unit import model

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
FEATURES = ["search", "export.csv", "dark-mode", "ai/assist", "billing:v2"]
COHORTS = [None, "wave-1", "wave-2", "pilot", "Dept Sales", "ring 0"]


@dataclass
class Message:
    key: bytes | None
    value: bytes | None


def _ts(rng: random.Random, ts_ms: int) -> object:
    kind = rng.random()
    if kind < 0.5:
        return ts_ms
    if kind < 0.7:
        return ts_ms + rng.choice([0.25, 0.5, 0.125])
    secs, ms = divmod(ts_ms, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}"
    if kind < 0.85:
        return text + "Z"
    # same instant written with a +05:30 offset
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs + 19800)) + f".{ms:03d}"
    return local + "+05:30"


def build_dataset(n_users: int, seed: int, now_ms: int | None = None, v2: bool = True) -> list[Message]:
    """Users with signups, exposures, uses; plus duplicates, garbage and future events, all shuffled.

    `v2` adds CONTRACT section 3 content (`_v2_messages`); without it the data set is the v1 one.
    """
    rng = random.Random(seed)
    now_ms = now_ms or int(time.time() * 1000)
    msgs: list[Message] = []
    people: list[tuple[str, int, list[str]]] = []  # user, signup time, features
    for u in range(n_users):
        user = rng.choice([f"user-{u}", f"ユーザー{u}", f"u{u}@example.com", f"user {u} ✓"])
        cohort = rng.choice(COHORTS)
        signup = now_ms - rng.randint(0, 45 * 24) * HOUR_MS - rng.randint(0, HOUR_MS)
        events: list[dict] = []
        if rng.random() < 0.8:
            events.append({"type": "signup", "ts_ms": signup, "cohort": cohort})
        features = rng.sample(FEATURES, rng.randint(0, 3))
        people.append((user, signup, features))
        for feature in features:
            exposed = signup + rng.randint(0, 10 * 24) * HOUR_MS
            fc = rng.choice([cohort, cohort, rng.choice(COHORTS)])
            if rng.random() < 0.85:
                events.append({"type": "exposure", "feature": feature, "ts_ms": exposed, "cohort": fc})
            for _ in range(rng.choice([0, 0, 1, 2, 5])):
                used = exposed + int(rng.lognormvariate(10, 3)) - 3 * HOUR_MS
                used = min(used, now_ms + rng.choice([0, 60_000, 240_000]))
                events.append({"type": "use", "feature": feature, "ts_ms": used})
        for i, e in enumerate(events):
            _publish(rng, msgs, user, i, e)
    hostile = [
        b"not json",
        b"",
        b"{}",
        b"[1,2,3]",
        b'{"event_id":"x","user_id":"u","type":"use","feature":"f","ts":NaN}',
        b'{"event_id":"x","user_id":"u","type":"use","feature":"Bad Feature","ts":1}',
        b'{"event_id":"x","user_id":"u","type":"use","feature":"f","ts":"2024-01-01T00:00:00"}',
        b'{"event_id":"x","user_id":"u","type":"use","feature":"f","ts":true}',
        b'{"event_id":"x","user_id":"u","type":"click","feature":"f","ts":1}',
        b'{"event_id":"","user_id":"u","type":"signup","ts":1}',
        b'{"event_id":"x","user_id":"\\ud800","type":"signup","ts":1}',
        b'{"event_id":"x","user_id":"u","type":"signup","ts":1} trailing',
        b"\xff\xfe garbage",
    ]
    for _ in range(max(10, n_users // 20)):
        msgs.append(Message(rng.choice([None, b"k"]), rng.choice(hostile)))
    for _ in range(max(5, n_users // 40)):
        future = {
            "event_id": f"f{rng.getrandbits(32)}",
            "user_id": f"user-{rng.randint(0, n_users)}",
            "type": "use",
            "feature": "search",
            "ts": now_ms + 3 * HOUR_MS,
        }
        msgs.append(Message(None, orjson.dumps(future)))
    msgs.append(Message(None, None))  # tombstone-like null value
    msgs.append(Message(b"big", b'{"pad":"' + b"x" * 70_000 + b'"}'))
    if v2:
        msgs += _v2_messages(random.Random(seed * 7919 + 2), people, now_ms)
    rng.shuffle(msgs)
    return msgs


def _publish(rng: random.Random, msgs: list[Message], user: str, i: int, e: dict) -> None:
    """One event as a message (with its key, sometimes unknown fields or a duplicate) into `msgs`.

    `e`: type, ts_ms, and optionally feature, cohort, the `ts` as written (else a random form of
    ts_ms), more fields (`fields`) and JSON text added as is (`raw`: numbers such as -0).
    """
    obj = {"event_id": f"e{i}-{rng.getrandbits(32):x}", "user_id": user, "type": e["type"]}
    if "feature" in e:
        obj["feature"] = e["feature"]
    obj["ts"] = e["ts"] if "ts" in e else _ts(rng, e["ts_ms"])
    if e.get("cohort"):
        obj["cohort"] = e["cohort"]
    obj.update(e.get("fields", {}))
    if rng.random() < 0.1:
        obj["extra"] = {"app": "web", "v": rng.randint(1, 9)}
    value = orjson.dumps(obj)
    if "raw" in e:
        value = value[:-1] + b"," + e["raw"] + b"}"
    key = rng.choice([user.encode(), user.encode(), None, f"other-{rng.randint(0, 99)}".encode()])
    msgs.append(Message(key, value))
    if rng.random() < 0.08:  # duplicate: same bytes, maybe another key
        msgs.append(Message(rng.choice([key, None]), value))


# -- CONTRACT section 3 --------------------------------------------------------------------------------

SCALES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
DURATION_EDGES_MS = [0, 1, 499, 500, 501, 1_000, 1_001, 2_000, 5_000, 10_000, 30_000, 60_000]
DURATION_EDGES_MS += [120_000, 300_000, 900_000, 3_599_999, 3_600_000, 3_600_001, 86_399_999, 86_400_000]
HOSTILE_V2 = [  # every one invalid
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"csat","score":5.0,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"csat","score":5e0,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"nps","score":true,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"nps","score":"5","ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"nps","score":null,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"nps","ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"nps","score":11,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"nps","score":-1,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"csat","score":0,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"csat","score":6,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"ces","score":8,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"ces","score":-0,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"NPS","score":5,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"stars","score":5,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","score":5,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"feedback","scale":"nps","score":5,"feature":"Bad","ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":null,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":-1,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":86400001,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":1.5,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":500.0,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":5e2,"ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":"10","ts":1}',
    b'{"event_id":"h","user_id":"u","type":"use","feature":"search","duration_ms":true,"ts":1}',
]


def _on_date(rng: random.Random, days_ago: int, now_ms: int) -> int:
    """A time on the UTC date `days_ago` before today's: often its first or last millisecond."""
    start = now_ms - now_ms % DAY_MS - days_ago * DAY_MS
    ts = rng.choice([start, start + DAY_MS - 1, start + rng.randrange(DAY_MS), start + rng.randrange(DAY_MS)])
    return min(ts, now_ms + rng.choice([0, 60_000, 240_000]))  # never beyond the 5-minute tolerance


def _days_ago(rng: random.Random) -> int:
    """Mostly recent dates, some up to 130 days back, a few tomorrow (now + up to 4 minutes: the
    next date when the data set is made just before a UTC midnight)."""
    if rng.random() < 0.02:
        return -1
    return rng.choice([rng.randint(0, 6), rng.randint(0, 29), rng.randint(0, 59), rng.randint(0, 130)])


def _duration_ms(rng: random.Random) -> int:
    if rng.random() < 0.3:
        return rng.choice(DURATION_EDGES_MS)
    return min(int(rng.lognormvariate(9, 2)), 86_400_000)


def _answers(rng: random.Random, features: list[str], now_ms: int) -> list[dict]:
    """A user's survey answers: every scale, about a feature or the product, some tied on ts."""
    out: list[dict] = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        scale = rng.choice(sorted(SCALES))
        lo, hi = SCALES[scale]
        e: dict = {"type": "feedback", "ts_ms": _on_date(rng, _days_ago(rng), now_ms)}
        e["fields"] = {"scale": scale, "score": rng.randint(lo, hi)}
        about = rng.choice([*features, None, None])
        if about is not None:
            e["feature"] = about
        elif rng.random() < 0.2:
            e["fields"]["feature"] = None  # the same as no feature
        out.append(e)
        if rng.random() < 0.2:  # another answer at the same instant: the lower score counts
            e["ts"] = e["ts_ms"]
            secs, ms = divmod(e["ts_ms"], 1000)
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"
            out.append({**e, "ts": iso, "fields": {**e["fields"], "score": rng.randint(lo, hi)}})
    return out


def _comebacks(rng: random.Random, features: list[str], now_ms: int) -> list[dict]:
    """Uses on several dates of the last 130 days, half of them with a task duration."""
    out: list[dict] = []
    for feature in features:
        if rng.random() < 0.5:
            continue
        for _ in range(rng.choice([1, 1, 2, 3, 5, 8])):
            e: dict = {"type": "use", "feature": feature, "ts_ms": _on_date(rng, _days_ago(rng), now_ms)}
            if rng.random() < 0.5:
                e["fields"] = {"duration_ms": _duration_ms(rng)}
            out.append(e)
    return out


def _v2_messages(rng: random.Random, people: list[tuple[str, int, list[str]]], now_ms: int) -> list[Message]:
    """Section 3 content: the v1 users come back on other dates and answer surveys; veterans signed
    up 60-130 days ago and were active then (dormant or back now); ignored v2 fields with garbage
    values on valid events; hostile v2 lines."""
    msgs: list[Message] = []
    for user, _, features in people:
        events = _comebacks(rng, features, now_ms)
        if rng.random() < 0.4:
            events += _answers(rng, features, now_ms)
        for i, e in enumerate(events):
            _publish(rng, msgs, user, 100 + i, e)
    for v in range(max(20, len(people) // 10)):
        user = rng.choice([f"veteran-{v}", f"ветеран {v}", f"v{v}@example.org"])
        signed = rng.randint(60, 130)
        features = rng.sample(FEATURES, rng.randint(1, 3))
        events = [{"type": "signup", "ts_ms": _on_date(rng, signed, now_ms), "cohort": rng.choice(COHORTS)}]
        for feature in features:
            events.append({"type": "exposure", "feature": feature, "ts_ms": _on_date(rng, signed, now_ms)})
            for _ in range(rng.randint(1, 4)):
                events.append(
                    {
                        "type": "use",
                        "feature": feature,
                        "ts_ms": _on_date(rng, rng.randint(31, signed), now_ms),
                    }
                )
        if rng.random() < 0.5:
            events += _comebacks(rng, features, now_ms)
        events += _answers(rng, features, now_ms)
        for i, e in enumerate(events):
            _publish(rng, msgs, user, i, e)
    for w in range(max(5, len(people) // 50)):  # valid, with v2 fields an event ignores or written oddly
        ts = _on_date(rng, _days_ago(rng), now_ms)
        weird = [
            {"type": "signup", "ts_ms": ts, "fields": {"duration_ms": "soon", "scale": 1, "score": "x"}},
            {"type": "exposure", "feature": "search", "ts_ms": ts, "fields": {"duration_ms": -1}},
            {"type": "use", "feature": "search", "ts_ms": ts, "fields": {"scale": "NPS", "score": 5.5}},
            {"type": "use", "feature": "dark-mode", "ts_ms": ts, "raw": b'"duration_ms":-0'},
            {
                "type": "feedback",
                "ts_ms": ts,
                "fields": {"scale": "nps", "feature": None, "duration_ms": None},
                "raw": b'"score":-0',
            },
        ]
        for i, e in enumerate(weird):
            _publish(rng, msgs, f"odd-{w}", i, e)
    for _ in range(max(10, len(people) // 20)):
        msgs.append(Message(rng.choice([None, b"k"]), rng.choice(HOSTILE_V2)))
    return msgs


class _Fixed:
    def __init__(self, totals: AdoptionTotals) -> None:
        self._totals = totals

    def merged_totals(self) -> AdoptionTotals:
        return self._totals

    def partition_totals(self) -> list[AdoptionTotals]:
        return [self._totals]


def expected_samples(msgs: list[Message], publish_now_ns: int, scrape_now_ns: int) -> Samples:
    """What every worker's contract series must add up to: the pure core, applied in order."""
    users: dict[str, UserState] = {}
    rejected = SourceOutcomes()
    for offset, m in enumerate(msgs):
        try:
            event = parse_event(m.value)
        except InvalidEvent:
            rejected.apply(InvalidEntry(0, offset, 0))
            continue
        if is_future(event.ts_ns, publish_now_ns):
            users.setdefault(event.user_id, UserState()).apply(FutureEntry(0, offset, 0, event.user_id))
            continue
        users.setdefault(event.user_id, UserState()).apply(event_entry(event, 0, offset, 0))
    totals = AdoptionTotals()
    for u in users.values():
        totals.add_user(u)
    totals.add_source(rejected)
    registry = CollectorRegistry()
    registry.register(AdoptionCollector(_Fixed(totals), 10_000, 10_000, clock_ns=lambda: scrape_now_ns))
    return contract_only(parse_samples(generate_latest(registry).decode()))


def expected_model_samples(msgs: list[Message], publish_now_ns: int, scrape_now_ns: int) -> Samples:
    """What every worker's contract series (v1 and v2) must add up to, from the brute-force model of
    CONTRACT.md: its outcomes with the monitor's clock at `publish_now_ns`, its series at T =
    `scrape_now_ns`. The data set is order-free (duplicates carry the same bytes), so the model's
    arrival order (the list's) gives the numbers of any partitioning."""
    arrivals = [(i, m.value) for i, m in enumerate(msgs)]
    return contract_only(model.expected_samples(arrivals, publish_now_ns, scrape_now_ns))


def _outcome(name: str):
    from adoptstream.core.events import Outcome

    return Outcome(name)
