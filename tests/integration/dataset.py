"""A hostile data set for exactness tests, and its expected numbers from the pure core applied in order."""

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
from tests.integration.workers import Samples, contract_only, parse_samples

HOUR_MS = 3_600_000
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


def build_dataset(n_users: int, seed: int, now_ms: int | None = None) -> list[Message]:
    """Users with signups, exposures, uses; plus duplicates, garbage and future events, all shuffled."""
    rng = random.Random(seed)
    now_ms = now_ms or int(time.time() * 1000)
    msgs: list[Message] = []
    for u in range(n_users):
        user = rng.choice([f"user-{u}", f"ユーザー{u}", f"u{u}@example.com", f"user {u} ✓"])
        cohort = rng.choice(COHORTS)
        signup = now_ms - rng.randint(0, 45 * 24) * HOUR_MS - rng.randint(0, HOUR_MS)
        events: list[dict] = []
        if rng.random() < 0.8:
            events.append({"type": "signup", "ts_ms": signup, "cohort": cohort})
        for feature in rng.sample(FEATURES, rng.randint(0, 3)):
            exposed = signup + rng.randint(0, 10 * 24) * HOUR_MS
            fc = rng.choice([cohort, cohort, rng.choice(COHORTS)])
            if rng.random() < 0.85:
                events.append({"type": "exposure", "feature": feature, "ts_ms": exposed, "cohort": fc})
            for _ in range(rng.choice([0, 0, 1, 2, 5])):
                used = exposed + int(rng.lognormvariate(10, 3)) - 3 * HOUR_MS
                used = min(used, now_ms + rng.choice([0, 60_000, 240_000]))
                events.append({"type": "use", "feature": feature, "ts_ms": used})
        for i, e in enumerate(events):
            obj = {"event_id": f"e{i}-{rng.getrandbits(32):x}", "user_id": user, "type": e["type"]}
            if "feature" in e:
                obj["feature"] = e["feature"]
            obj["ts"] = _ts(rng, e["ts_ms"])
            if e.get("cohort"):
                obj["cohort"] = e["cohort"]
            if rng.random() < 0.1:
                obj["extra"] = {"app": "web", "v": rng.randint(1, 9)}
            value = orjson.dumps(obj)
            key = rng.choice([user.encode(), user.encode(), None, f"other-{rng.randint(0, 99)}".encode()])
            msgs.append(Message(key, value))
            if rng.random() < 0.08:  # duplicate: same bytes, maybe another key
                msgs.append(Message(rng.choice([key, None]), value))
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
    rng.shuffle(msgs)
    return msgs


class _Fixed:
    def __init__(self, totals: AdoptionTotals) -> None:
        self._totals = totals

    def merged_totals(self) -> AdoptionTotals:
        return self._totals


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
