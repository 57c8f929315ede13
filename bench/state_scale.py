"""State scale, memory over time, and recovery of one adoptstream worker.

    .venv/bin/python bench/state_scale.py scale    [--users 1000000] [--recovery] [--json OUT]
                                                   [--membership static|dynamic]
    .venv/bin/python bench/state_scale.py soak     [--users 100000 --rate 5000 --duration 180]
                                                   [--mode new|replay]

scale: every user gets a compact story (a signup, 1-3 exposures to Zipf-popular features, a use of
  ~60% of them; ~4 events per user, 150-250 bytes each, produced in chunks). One worker
  (--store rocksdb) applies everything; then: RSS, on-disk RocksDB size (du of its data dir), the
  changelog topic's size on the broker, the logical state (every stored value decoded: users,
  user-features, bytes), bytes per user and per user-feature. With --recovery, then:
    a) SIGKILL the worker, start a replacement on the SAME data dir (local RocksDB + changelog tail);
    b) SIGKILL it, start a replacement on an EMPTY data dir (whole changelog restored);
  each timed from the kill until /metrics shows exactly the contract numbers of before the kill.
  --membership static (default): the loaded worker and both replacements run with one --instance-id
  (Kafka static membership), so a replacement takes the partitions over at once and the times measure
  the restore; dynamic: no instance id, the times include the dead member's 10 s session timeout.
  The result's "membership" says which.
soak: constant user count; traffic at --rate over the same --users users for --duration s, RSS
  sampled every 5 s. --mode new: fresh events (new event ids: each accepted id is remembered for the
  contract's 24 h dedup window, so state grows by design until ids age out); --mode replay: the same
  events again (all duplicates: state must not grow; anything growing is a leak).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import orjson
from common import log

FEATURES = ("search", "dashboards", "export.csv", "notifications", "dark-mode", "comments", "share-link",
            "ai/assist", "calendar-sync", "bulk-edit", "api-tokens", "offline-mode")
ZIPF = [1 / (i + 1) ** 1.1 for i in range(len(FEATURES))]
COHORTS = ("pilot", "wave-1", "wave-2", "dept-sales", "dept-support")
DAY_MS = 86_400_000


def stories(users: int, seed: int, now_ms: int, start: int = 0) -> Iterator[bytes]:
    """~4 events per user: signup, 1-3 exposures, uses of ~60% of the exposed features."""
    rng = random.Random(seed)
    for idx in range(start, users):
        uid = common._user_id(idx)
        t0 = now_ms - int(rng.random() * 29 * DAY_MS)
        cohort = COHORTS[idx % len(COHORTS)]
        yield orjson.dumps({"event_id": f"{rng.getrandbits(64):016x}-s", "user_id": uid, "type": "signup",
                            "ts": t0, "cohort": cohort, "tenant": "acme", "source": "accounts-svc"})
        k = 1 + int(rng.random() * 3)
        feats = set()
        while len(feats) < k:
            feats.add(rng.choices(FEATURES, ZIPF)[0])
        for f in sorted(feats):
            te = min(now_ms, t0 + int(rng.random() * DAY_MS))
            yield orjson.dumps({"event_id": f"{rng.getrandbits(64):016x}-e", "user_id": uid,
                                "type": "exposure", "feature": f, "ts": te, "cohort": cohort,
                                "tenant": "acme", "source": "flags-svc"})
            if rng.random() < 0.6:
                tu = min(now_ms, te + int(rng.lognormvariate(13, 1.5)))
                yield orjson.dumps({"event_id": f"{rng.getrandbits(64):016x}-u", "user_id": uid,
                                    "type": "use", "feature": f, "ts": tu,
                                    "client": {"platform": "web", "version": "4.18.2"},
                                    "session_id": f"s-{rng.getrandbits(48):012x}"})


def uses_for(users: int, seed: int, now_ms: int, count: int) -> Iterator[bytes]:
    """`count` fresh `use` events of the same `users` users (new event ids)."""
    rng = random.Random(seed)
    for _ in range(count):
        idx = int(users * rng.random() ** 2)
        yield orjson.dumps({"event_id": f"{rng.getrandbits(64):016x}-r", "user_id": common._user_id(idx),
                            "type": "use", "feature": rng.choices(FEATURES, ZIPF)[0],
                            "ts": now_ms - int(rng.random() * 3_600_000),
                            "client": {"platform": "ios", "version": "5.12.3"},
                            "session_id": f"s-{rng.getrandbits(48):012x}"})


async def produce_stream(bootstrap: str, topic: str, lines: Iterator[bytes], rate: float | None = None,
                         on_tick=None) -> int:
    """Publish lines (optionally paced at `rate`/s); return how many."""
    from adoptstream.publish import Publisher

    pub = Publisher(common.kafka(bootstrap), topic, partitions=common.PARTITIONS, client_id="bench-state")
    await pub.start()
    n = 0
    start = time.monotonic()
    try:
        for line in lines:
            pub.add(line)
            n += 1
            if n % 2000 == 0:
                await pub.send_pending(include_open=rate is not None)
                if rate:
                    ahead = n / rate - (time.monotonic() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                    if on_tick:
                        on_tick(n)
        await pub.flush()
    finally:
        await pub.stop()
    if pub.stats.send_failed:
        raise RuntimeError(pub.stats.as_dict())
    return n


def wait_total(workers: list[common.Worker], n: int, timeout: float, every: float = 0.5,
               on_poll=None) -> float:
    """Wait until the summed adoptstream_events_total reaches n; return the time it did."""
    deadline = time.monotonic() + timeout
    last_log = 0.0
    while time.monotonic() < deadline:
        pages = [w.samples(timeout=15, query=common.EVENTS_ONLY) for w in workers if w.alive()]
        total = sum(common.metric_sum(p, "adoptstream_events_total") for p in pages if p)
        if on_poll:
            on_poll(total)
        if total >= n:
            return time.time()
        if time.monotonic() - last_log > 30:
            log(f"  {total:,.0f}/{n:,} applied")
            last_log = time.monotonic()
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"worker died:\n{w.log_tail()}")
        time.sleep(every)
    raise TimeoutError(f"not all {n:,} events applied in {timeout:.0f} s")


def logical_state(state_dir: Path) -> dict:
    """Decode every stored value of every partition store (worker stopped): users, features, bytes."""
    from rocksdict import AccessType, Options, Rdict

    from adoptstream.core.state import UserState

    users = feats = key_bytes = value_bytes = seen = 0
    for part in sorted(state_dir.glob("p*")):
        db = Rdict(str(part), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for k, v in db.items():
                if k[:1] != b"u":
                    continue
                users += 1
                key_bytes += len(k)
                value_bytes += len(v)
                st = UserState.decode(v)
                feats += len(st.features)
                seen += len(st.seen)
        finally:
            db.close()
    return {"users": users, "user_features": feats, "key_bytes": key_bytes, "value_bytes": value_bytes,
            "seen_ids": seen,
            "value_bytes_per_user": round(value_bytes / users, 1) if users else None,
            "logical_bytes_per_user_feature": round((key_bytes + value_bytes) / feats, 1) if feats else None}


def broker_topic_bytes(broker_dir: Path | None, topic: str) -> int | None:
    if broker_dir is None:
        return None
    return sum(common.dir_bytes(p) for p in (broker_dir / "data").glob(f"{topic}-*"))


def contract(workers: list[common.Worker]) -> common.Samples | None:
    pages = []
    for w in workers:
        s = w.samples(timeout=15)
        if s is None:
            return None
        pages.append(common.contract_only(s))
    return common.summed(pages)


def time_until_exact(workers: list[common.Worker], reference: common.Samples, t_kill: float,
                     timeout: float = 300) -> tuple[float | None, list[str]]:
    """Seconds from t_kill until the workers' summed contract series equal `reference`."""
    deadline = time.monotonic() + timeout
    last: common.Samples | None = None
    while time.monotonic() < deadline:
        got = contract([w for w in workers if w.alive()])
        if got is not None:
            last = got
            if not common.diff_samples(got, reference):
                return time.time() - t_kill, []
        time.sleep(0.1)
    return None, common.diff_samples(last or {}, reference)


def run_scale(args: argparse.Namespace) -> dict:
    run_id = uuid.uuid4().hex[:8]
    topic, app_id = f"bench-scale-{run_id}", f"bench-{run_id}-scale"
    out: dict = {"users": args.users}
    with tempfile.TemporaryDirectory(prefix="adoptstream-scale-", dir=args.tmp) as tmp, \
            common.broker(args.bootstrap, Path(tmp)) as (bootstrap, _pid, kversion):
        broker_dir = next(Path(tmp).glob("adoptstream-bench-kafka-*"), None)
        out["machine"] = common.machine_info(kversion)
        common.create_topic(bootstrap, topic)
        now_ms = time.time_ns() // 1_000_000
        data_dir = Path(tmp) / "w1"
        # static: every replacement takes over the killed worker's group membership at once
        member = ["--instance-id", f"{app_id}-w"] if args.membership == "static" else []
        out["membership"] = f"static (--instance-id {app_id}-w)" if member else "dynamic (no --instance-id)"
        log(f"group membership: {out['membership']}")
        w = common.Worker(bootstrap, topic, data_dir, app_id, extra=member)
        with common.workers_cleanup([w]) as live:
            w.start()
            w.wait_ready()
            t0 = time.time()
            n = asyncio.run(produce_stream(bootstrap, topic, stories(args.users, args.seed, now_ms)))
            log(f"produced {n:,} story events for {args.users:,} users in {time.time() - t0:.0f} s")
            hwm_poll = []
            t_done = wait_total([w], n, timeout=max(1800, n / 2000),
                                on_poll=lambda _: hwm_poll.append(common.proc_status_kb(w.pid, "VmRSS")))
            t_first = common.first_timestamp_s(bootstrap, f"{app_id}-{topic}-by-user") or t0
            out.update({"events": n, "apply_s": round(t_done - t_first, 1),
                        "events_per_s": round(n / (t_done - t_first))})
            time.sleep(3)
            out["rss_mb"] = round((common.proc_status_kb(w.pid, "VmRSS") or 0) / 1024)
            out["peak_rss_mb"] = round((common.proc_status_kb(w.pid, "VmHWM") or 0) / 1024)
            out["rocksdb_dir_mb_running"] = round(common.dir_bytes(data_dir) / 1e6, 1)
            reference = contract([w])
            if args.recovery and reference is not None:
                # a) kill, restart on the same data dir
                w.kill()
                t_kill = time.time()
                w2 = common.Worker(bootstrap, topic, data_dir, app_id, extra=member)
                live.append(w2)
                w2.start()
                took, diff = time_until_exact([w2], reference, t_kill)
                out["recovery_same_dir_s"] = round(took, 1) if took else None
                out["recovery_same_dir_diff"] = diff
                log(f"recovery from local RocksDB + changelog tail: {took} s {diff}")
                # b) kill, restart on an empty data dir: the whole changelog is read back
                w2.kill()
                t_kill = time.time()
                w3 = common.Worker(bootstrap, topic, Path(tmp) / "w3-empty", app_id, extra=member)
                live.append(w3)
                w3.start()
                took, diff = time_until_exact([w3], reference, t_kill)
                out["recovery_empty_dir_s"] = round(took, 1) if took else None
                out["recovery_empty_dir_diff"] = diff
                s = w3.samples() or {}
                out["restored_records"] = common.metric_sum(s, "adoptstream_state_restored_records_total")
                out["restore_duration_s"] = common.metric_sum(s, "adoptstream_state_restore_duration_seconds")
                out["rss_after_full_restore_mb"] = round((common.proc_status_kb(w3.pid, "VmRSS") or 0) / 1024)
                log(f"recovery from the changelog only: {took} s {diff}")
                w3.stop()
            else:
                w.stop()
        out["rocksdb_dir_mb_stopped"] = round(common.dir_bytes(data_dir) / 1e6, 1)
        changelog = f"{app_id}-{topic}-state-changelog"
        cl = broker_topic_bytes(broker_dir, changelog)
        out["changelog_mb_on_broker"] = round(cl / 1e6, 1) if cl is not None else None
        out["state"] = logical_state(data_dir / app_id / "state")
        uf = out["state"]["user_features"] or 1
        out["disk_bytes_per_user"] = round(common.dir_bytes(data_dir) / max(1, out["state"]["users"]), 1)
        out["disk_bytes_per_user_feature"] = round(common.dir_bytes(data_dir) / uf, 1)
    return out


def run_soak(args: argparse.Namespace) -> dict:
    run_id = uuid.uuid4().hex[:8]
    topic, app_id = f"bench-soak-{run_id}", f"bench-{run_id}-soak"
    out: dict = {"users": args.users, "rate": args.rate, "duration_s": args.duration, "mode": args.mode}
    with tempfile.TemporaryDirectory(prefix="adoptstream-soak-", dir=args.tmp) as tmp, \
            common.broker(args.bootstrap, Path(tmp)) as (bootstrap, _pid, kversion):
        out["machine"] = common.machine_info(kversion)
        common.create_topic(bootstrap, topic)
        now_ms = time.time_ns() // 1_000_000
        data_dir = Path(tmp) / "w"
        w = common.Worker(bootstrap, topic, data_dir, app_id)
        with common.workers_cleanup([w]):
            w.start()
            w.wait_ready()
            # every user exists first (constant user count from here on)
            n0 = asyncio.run(produce_stream(bootstrap, topic, stories(args.users, args.seed, now_ms)))
            wait_total([w], n0, timeout=1800)
            log(f"{args.users:,} users loaded ({n0:,} events); "
                f"soak: {args.rate:,.0f}/s for {args.duration:.0f} s")
            count = int(args.rate * args.duration)
            if args.mode == "new":
                lines: Iterator[bytes] = uses_for(args.users, args.seed + 1, now_ms, count)
            else:
                base = list(stories(args.users, args.seed, now_ms))  # the same bytes again: duplicates
                lines = (base[i % len(base)] for i in range(count))
            series: list[dict] = []
            t_start = time.time()
            next_sample = [0.0]

            def sample(_: int) -> None:
                if time.time() >= next_sample[0]:
                    next_sample[0] = time.time() + 5
                    series.append({"t": round(time.time() - t_start, 1),
                                   "rss_mb": round((common.proc_status_kb(w.pid, "VmRSS") or 0) / 1024, 1),
                                   "data_dir_mb": round(common.dir_bytes(data_dir) / 1e6, 1)})

            sample(0)
            sent = asyncio.run(produce_stream(bootstrap, topic, iter(lines), rate=args.rate, on_tick=sample))
            wait_total([w], n0 + sent, timeout=600)
            sample(0)
            out["series"] = series
            out["events"] = sent
            out.update(soak_summary(series, sent))
    return out


def soak_summary(series: list[dict], events: int) -> dict:
    """Start, peak and end RSS, and the RSS slope over the last quarter of the run (0 = plateau)."""
    first, last = series[0], series[-1]
    q = next((x for x in series if x["t"] >= 0.75 * last["t"]), series[-1])
    minutes = (last["t"] - q["t"]) / 60 or 1
    return {"rss_start_mb": first["rss_mb"], "rss_peak_mb": max(x["rss_mb"] for x in series),
            "rss_end_mb": last["rss_mb"],
            "rss_slope_mb_per_min_last_quarter": round((last["rss_mb"] - q["rss_mb"]) / minutes, 2),
            "rss_growth_bytes_per_event_overall":
                round((last["rss_mb"] - first["rss_mb"]) * 1e6 / max(1, events), 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["scale", "soak"])
    p.add_argument("--users", type=int)
    p.add_argument("--recovery", action="store_true", help="scale: also time SIGKILL recoveries")
    p.add_argument("--membership", choices=["static", "dynamic"], default="static",
                   help="scale: the worker and its replacements share one --instance-id (static, default) "
                        "or have none (dynamic: recoveries include the 10 s session timeout)")
    p.add_argument("--rate", type=float, default=5000)
    p.add_argument("--duration", type=float, default=180)
    p.add_argument("--mode", dest="soak_mode", choices=["new", "replay"], default="new")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--bootstrap")
    p.add_argument("--tmp", help="where temp dirs go (default: system temp)")
    p.add_argument("--json")
    args = p.parse_args()
    common.exit_on_sigterm()
    if args.mode == "scale":
        args.users = args.users or 1_000_000
        result = run_scale(args)
    else:
        args.users = args.users or 100_000
        args.mode = args.soak_mode
        result = run_soak(args)
    print(json.dumps(result, indent=2))
    common.save_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
