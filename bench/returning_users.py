"""The state stage's cost for returning users with a history of dates of use (CPU µs per event).

    .venv/bin/python bench/returning_users.py [--users 5000]

Each of `--users` users has used a feature on 1, 10 or 30 consecutive dates; then one more use of
each is applied, on a new date (its dates of use change: every rank moves) or on its latest date
again (they do not). Real `ingest.route` and `processor.apply_batch` over a memory store, batches of
the worker's size; CPU time, so only comparable on one machine.
"""

from __future__ import annotations

import argparse
import time

import orjson
from aiokafka import ConsumerRecord

from adoptstream.core.state import DAY_NS
from adoptstream.core.totals import AdoptionTotals
from adoptstream.runtime import records
from adoptstream.runtime.ingest import route
from adoptstream.runtime.processor import apply_batch
from adoptstream.runtime.store import MemoryStore

T = 20_400 * DAY_NS + 12 * 3_600 * 10**9
MS = 1_000_000


def _apply(store: MemoryStore, totals: AdoptionTotals, values: list[bytes], offset: int) -> float:
    recs = [
        ConsumerRecord("in", 0, offset + i, 0, 0, None, v, None, 0, len(v), []) for i, v in enumerate(values)
    ]
    packs = [
        p
        for i in range(0, len(recs), 20_000)
        for es in route(recs[i : i + 20_000], 1, T).by_user.values()
        for p in records.packs(es)
    ]
    started = time.process_time()
    for i in range(0, len(packs), 40):  # ~20,000 entries per batch, as the worker reads them
        applied = apply_batch(store, totals, [(None, v) for v in packs[i : i + 40]])
        store.save(applied.keys, applied.values, 0)
    return time.process_time() - started


def run(history: int, users: int, same_date: bool) -> float:
    store, totals = MemoryStore(), AdoptionTotals()
    totals.advance(T // DAY_NS)
    first = 0 if same_date else 1
    past = [
        orjson.dumps(
            {
                "event_id": f"h{d}",
                "user_id": f"u{u}",
                "type": "use",
                "feature": "f",
                "ts": (T - d * DAY_NS) // MS,
            }
        )
        for d in range(first + history - 1, first - 1, -1)
        for u in range(users)
    ]
    _apply(store, totals, past, 0)
    now = [
        orjson.dumps(
            {"event_id": "now", "user_id": f"u{u}", "type": "use", "feature": "f", "ts": T // MS + 1}
        )
        for u in range(users)
    ]
    return 1e6 * _apply(store, totals, now, len(past)) / users


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=5_000)
    args = p.parse_args()
    for history in (1, 10, 30):
        new = run(history, args.users, same_date=False)
        again = run(history, args.users, same_date=True)
        print(
            f"{history:2d} dates of history: a use on a new date {new:5.1f} us, "
            f"on the latest date again {again:5.1f} us"
        )


if __name__ == "__main__":
    main()
