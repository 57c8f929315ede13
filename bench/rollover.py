"""The turn of the UTC day at scale: what it costs the state stage and a scrape.

    .venv/bin/python bench/rollover.py [--users 1000000] [--partitions 8]

Builds the totals of `--users` synthetic users (1-3 features each, uses spread over 120 days,
durations, answers of every scale, signups) in `--partitions` partitions through the real state
rules (`UserState.apply`, `AdoptionTotals.add_user`), then times, just before and just after a UTC
midnight: a full scrape (every contract family through `generate_latest`), the state stage's day
turn (`AdoptionTotals.advance` of every partition) and scrapes around it, section 2 (whose merged
totals are cached until something changes, as the state stage caches them) and section 3 apart.
"""

from __future__ import annotations

import argparse
import random
import time

from prometheus_client import CollectorRegistry, generate_latest

from adoptstream.core.entries import AnswerEntry, EventEntry, TimedUseEntry
from adoptstream.core.state import DAY_NS, UserState
from adoptstream.core.totals import AdoptionTotals
from adoptstream.exposition.collector import AdoptionCollector
from adoptstream.exposition.engagement import EngagementCollector

MIDNIGHT = 20_400 * DAY_NS  # 2025-11-08T00:00:00Z
FEATURES = [f"feature-{i:02d}" for i in range(20)]
SCALES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}


def build(users: int, partitions: int, seed: int = 7) -> list[AdoptionTotals]:
    rng = random.Random(seed)
    parts = [AdoptionTotals() for _ in range(partitions)]
    for part in parts:
        part.advance(MIDNIGHT // DAY_NS - 1)
    for u in range(users):
        user = UserState()
        offset = 0

        def apply(etype: str, feature: str | None, ts: int, **v2: object) -> None:
            nonlocal offset
            offset += 1
            fields = (0, offset, 0, "u", f"e{offset}", etype, feature, ts, None)
            if v2.get("duration_ms") is not None:
                entry: EventEntry = TimedUseEntry(*fields, v2["duration_ms"])  # type: ignore[arg-type]
            elif etype == "feedback":
                entry = AnswerEntry(*fields, v2["scale"], v2["score"])  # type: ignore[arg-type]
            else:
                entry = EventEntry(*fields)
            user.apply(entry)  # noqa: B023 (called in this iteration only)

        apply("signup", None, MIDNIGHT - rng.randrange(120 * DAY_NS))
        for feature in rng.sample(FEATURES, rng.randint(1, 3)):
            for _ in range(rng.randint(1, 6)):
                duration = rng.randrange(600_000) if rng.random() < 0.5 else None
                apply("use", feature, MIDNIGHT - rng.randrange(120 * DAY_NS), duration_ms=duration)
            if rng.random() < 0.2:
                scale = rng.choice(list(SCALES))
                score = rng.randint(*SCALES[scale])
                apply("feedback", feature, MIDNIGHT - rng.randrange(100 * DAY_NS), scale=scale, score=score)
        parts[u % partitions].add_user(user)
    return parts


class Source:
    """What StateProcessor offers the collectors: the partitions' totals and their merge (cached until
    `changed()`, as the processor caches it until the next batch or day turn)."""

    def __init__(self, parts: list[AdoptionTotals]) -> None:
        self.parts = parts
        self._merged: AdoptionTotals | None = None

    def changed(self) -> None:
        self._merged = None

    def partition_totals(self) -> list[AdoptionTotals]:
        return self.parts

    def merged_totals(self) -> AdoptionTotals:
        if self._merged is None:
            self._merged = AdoptionTotals()
            for part in self.parts:
                self._merged.merge(part, section_3=False)
        return self._merged


def timed(what: str, fn) -> object:
    t0 = time.perf_counter()
    out = fn()
    print(f"{what}: {1000 * (time.perf_counter() - t0):,.1f} ms")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=8)
    args = p.parse_args()
    parts = timed(f"totals of {args.users:,} users", lambda: build(args.users, args.partitions))
    keys = sum(len(d.ranks) + len(d.returns) for t in parts for d in t.use_dates.values())
    keys += sum(len(c.counts) for t in parts for c in (t.signup_days, *t.answer_days.values()))
    print(f"date-keyed counts in all partitions: {keys:,}")
    clock = [MIDNIGHT - 1]
    source = Source(parts)
    section_2, section_3 = CollectorRegistry(), CollectorRegistry()
    adoption = AdoptionCollector(source, 100, 100, clock_ns=lambda: clock[0])
    section_2.register(adoption)
    section_3.register(EngagementCollector(source, adoption.features, clock_ns=lambda: clock[0]))

    def scrape(what: str) -> None:
        timed(f"{what}: section 3 families", lambda: generate_latest(section_3))
        timed(f"{what}: section 2 families", lambda: generate_latest(section_2))

    def day_turn(today: int) -> None:
        for totals in parts:
            totals.advance(today)
        source.changed()

    scrape("scrape before midnight, after a change")
    scrape("scrape before midnight, nothing changed")
    clock[0] = MIDNIGHT + 1
    scrape("scrape after midnight, the state stage still on the day before")
    timed("the state stage's day turn (advance every partition)", lambda: day_turn(MIDNIGHT // DAY_NS))
    scrape("scrape after the day turn")
    clock[0] = MIDNIGHT + DAY_NS + 1
    timed("the next day turn", lambda: day_turn(clock[0] // DAY_NS))
    scrape("scrape after it")


if __name__ == "__main__":
    main()
