"""What a burst of scrapes costs the event loop that also runs a worker's consumers and heartbeats.

    .venv/bin/python bench/scrape_storm.py [--users 1000000] [--rounds 5] [--before SRC] [--json OUT]

Builds the state of `--users` users (bench/state_scale.py's stories, ~4 events per user) with one
worker, stops it, then for each code under test starts a worker on that same data dir (its state comes
back from the local store) and sends `--rounds` bursts of 10 concurrent full scrapes of /metrics.
Meanwhile a probe thread asks for /healthz every 10 ms: the slowest answer is the worst pause of the
event loop the scrapes caused (a request that has to wait for the loop waits as long as a heartbeat
would). `--before SRC` (a `src` directory of an earlier checkout, e.g. from `git archive`) runs that
code first, through PYTHONPATH, for a before/after comparison; the state is built with it too.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.synchronize
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import log
from state_scale import produce_stream, stories, wait_total

CONCURRENT = 10


def get(url: str, timeout: float = 60.0) -> tuple[int, float, int]:
    """(status, seconds, body bytes) of one GET."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, time.perf_counter() - started, len(body)
    except urllib.error.HTTPError as exc:
        return exc.code, time.perf_counter() - started, 0


def probe(url: str, stop: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    """/healthz every 10 ms until `stop`; the latencies (a process of its own: no GIL shared with the
    scraping threads)."""
    latencies = []
    while not stop.is_set():
        latencies.append(get(url, timeout=120)[1])
        time.sleep(0.01)
    out.put(latencies)


def probed(url: str, seconds: float | None, during=None) -> list[float]:
    stop, out = multiprocessing.Event(), multiprocessing.Queue()
    prober = multiprocessing.Process(target=probe, args=(url, stop, out))
    prober.start()
    time.sleep(0.5)
    if during is not None:
        during()
    else:
        time.sleep(seconds or 2)
    stop.set()
    latencies = out.get(timeout=60)
    prober.join()
    return latencies


def lag_buckets(worker: common.Worker) -> dict[float, float]:
    page = worker.samples() or {}
    return {
        float(dict(labels)["le"]): v
        for (name, labels), v in page.items()
        if name == "adoptstream_event_loop_lag_seconds_bucket"
    }


def storm(worker: common.Worker, rounds: int) -> dict:
    """Bursts of CONCURRENT full scrapes, a /healthz probe every 10 ms; the figures."""
    for _ in range(3):  # warm up: the first scrape admits the label values
        get(worker.url("/metrics"))
    baseline = max(probed(worker.url("/healthz"), 3))
    scrapes: list[tuple[int, float, int]] = []
    bursts: list[float] = []

    def bursts_of_scrapes() -> None:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            for _ in range(rounds):
                started = time.perf_counter()
                scrapes.extend(pool.map(lambda _: get(worker.url("/metrics")), range(CONCURRENT)))
                bursts.append(time.perf_counter() - started)
                time.sleep(1)

    lags_before = lag_buckets(worker)
    probes = probed(worker.url("/healthz"), None, bursts_of_scrapes)
    lags = {le: n - lags_before.get(le, 0) for le, n in lag_buckets(worker).items()}
    ok = [s for s in scrapes if s[0] == 200]
    page = worker.samples() or {}
    total = lags.get(float("inf"), 0)
    return {
        # the worker's own probe (a 50 ms timer): every tick during the storm was at most this late
        "worker_loop_lag_at_most_s": min((le for le, n in lags.items() if n == total), default=None)
        if lags
        else None,
        "healthz_worst_quiet_s": round(baseline, 4),
        "healthz_worst_during_storm_s": round(max(probes), 4),
        "healthz_p99_during_storm_s": round(statistics.quantiles(probes, n=100)[98], 4),
        "burst_wall_s_mean": round(statistics.mean(bursts), 3),
        "scrape_s_median": round(statistics.median(s[1] for s in ok), 4) if ok else None,
        "scrape_s_max": round(max(s[1] for s in ok), 4) if ok else None,
        "page_bytes": ok[0][2] if ok else None,
        "status_counts": {str(c): sum(1 for s in scrapes if s[0] == c) for c in {s[0] for s in scrapes}},
        "worker_loop_lag_max_s": page.get(("adoptstream_event_loop_lag_max_seconds", ())),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--before", type=Path, help="src dir of the code to compare with (runs first)")
    p.add_argument("--bootstrap", help="an existing broker (default: a fresh local one)")
    p.add_argument("--tmp", help="where the broker and the state go")
    p.add_argument("--json")
    args = p.parse_args()
    run_id = uuid.uuid4().hex[:8]
    topic, app_id = f"bench-storm-{run_id}", f"bench-{run_id}-storm"
    codes = ([("before", {"PYTHONPATH": str(args.before.resolve())})] if args.before else []) + [
        ("after", {})
    ]
    out: dict = {"users": args.users, "concurrent_scrapes": CONCURRENT, "rounds": args.rounds}
    with (
        tempfile.TemporaryDirectory(prefix="adoptstream-storm-", dir=args.tmp) as tmp,
        common.broker(args.bootstrap, Path(tmp)) as (bootstrap, _pid, kversion),
    ):
        out["machine"] = common.machine_info(kversion)
        common.create_topic(bootstrap, topic)
        data_dir = Path(tmp) / "w"
        builder = common.Worker(bootstrap, topic, data_dir, app_id, env=codes[0][1])
        with common.workers_cleanup([builder]):
            builder.start()
            builder.wait_ready()
            now_ms = time.time_ns() // 1_000_000
            n = asyncio.run(produce_stream(bootstrap, topic, stories(args.users, args.seed, now_ms)))
            log(f"produced {n:,} events for {args.users:,} users")
            wait_total([builder], n, timeout=max(1800, n / 2000))
            out["events"] = n
            builder.stop()
        for label, env in codes:
            worker = common.Worker(bootstrap, topic, data_dir, app_id, env=env)
            with common.workers_cleanup([worker]):
                worker.start()
                worker.wait_ready(timeout_s=600)
                wait_total([worker], n, timeout=600)
                out[label] = storm(worker, args.rounds)
                log(f"{label}: {out[label]}")
                worker.stop()
    common.save_json(args.json, out)
    print(out)


if __name__ == "__main__":
    main()
