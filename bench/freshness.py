"""Freshness: time from an event's production to its effect being visible in /metrics, at a fixed rate.

    .venv/bin/python bench/freshness.py [--rate R | --capacity-events 200000] [--duration 60]
                                        [--poll-ms 25] [--bootstrap HOST:PORT] [--json OUT]

1. Capacity (unless --rate): --capacity-events realistic events are produced to a fresh topic, one
   `adoptstream worker --store rocksdb` applies them, measured like bench/run.py (first record seen ->
   all applied). The worker keeps running, warm, with that state.
2. Live phase: background traffic (more realistic events, over the same user population) is produced
   at R = half the measured capacity (or --rate), plus 10 probes/s. A probe is a new user's `use` of
   feature "probe" with ts = now, so adoptstream_feature_uses_total{feature="probe"} (and the probe's
   active users) grows by one per probe. All probe users live in input partition 0 and by-user
   partition 0, so they are applied in production order: the counter reaching i means probe i is
   visible.
3. /metrics?name[]=adoptstream_feature_uses_total (only that family: cheap for the worker) is polled
   every --poll-ms; latency of probe i = (response time of the first scrape showing >= i) - (time
   probe i was handed to the producer). p50/p99/max over the probes of the live phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import orjson
from common import log

PROBE_USERS: list[str] = []
PROBE_RE = re.compile(rb'^adoptstream_feature_uses_total\{feature="probe"\} (\S+)$', re.M)


def probe_users(count: int, partitions: int = common.PARTITIONS) -> list[str]:
    """User ids that the publisher puts in input partition 0 and adoptstream in by-user partition 0."""
    from aiokafka.partitioner import murmur2

    out, i = [], 0
    tag = uuid.uuid4().hex[:6]
    while len(out) < count:
        uid = f"probe-{tag}-{i}"
        key = uid.encode()
        if (murmur2(key) & 0x7FFFFFFF) % partitions == 0 and zlib.crc32(key) % partitions == 0:
            out.append(uid)
        i += 1
    return out


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


class Poller(threading.Thread):
    """Scrapes /metrics every `interval` s; records (response time, probe count) and scrape durations."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        # only the probe counter's family: a full page would cost the worker a few ms per 25 ms poll
        self.url = f"http://127.0.0.1:{port}/metrics?name[]=adoptstream_feature_uses_total"
        self.interval = interval
        self.points: list[tuple[float, int]] = []
        self.scrape_s: list[float] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        nxt = time.monotonic()
        while not self.stop_flag.is_set():
            t_req = time.time()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    body = resp.read()
            except OSError:
                body = b""
            t_resp = time.time()
            m = PROBE_RE.search(body)
            self.points.append((t_resp, int(float(m.group(1))) if m else 0))
            self.scrape_s.append(t_resp - t_req)
            nxt += self.interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()

    def first_time_at_least(self) -> dict[int, float]:
        out: dict[int, float] = {}
        best = 0
        for t, c in self.points:
            while best < c:
                best += 1
                out[best] = t
        return out


async def live_phase(bootstrap: str, topic: str, lines: list[bytes], rate: float, duration: float,
                     probes_per_s: float) -> tuple[list[float], int]:
    """Produce `rate` background events/s plus probes; return probe production times and the count sent."""
    from adoptstream.publish import Publisher

    pub = Publisher(common.kafka(bootstrap), topic, partitions=common.PARTITIONS, client_id="bench-freshness")
    await pub.start()
    users = PROBE_USERS
    produced_at: list[float] = []
    sent = 0
    try:
        start = time.monotonic()
        next_probe = start + 1.0 / probes_per_s
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= duration:
                break
            due = min(len(lines), int(elapsed * rate))
            while sent < due:
                pub.add(lines[sent])
                sent += 1
            if now >= next_probe and len(produced_at) < len(users):
                uid = users[len(produced_at)]
                now_ms = time.time_ns() // 1_000_000
                probe = orjson.dumps({"event_id": uuid.uuid4().hex, "user_id": uid, "type": "use",
                                      "feature": "probe", "ts": now_ms,
                                      "client": {"platform": "web", "version": "4.18.1"}})
                produced_at.append(time.time())
                pub.add(probe)
                next_probe += 1.0 / probes_per_s
            await pub.send_pending()
            await asyncio.sleep(0.005)
        await pub.flush()
    finally:
        await pub.stop()
    if pub.stats.send_failed:
        raise RuntimeError(f"publish failures: {pub.stats.as_dict()}")
    return produced_at, sent + len(produced_at)


async def _probe_timestamps(
    bootstrap: str, topic: str, keys: set[bytes], packed: bool = False
) -> dict[bytes, int]:
    """CreateTime (ms) of the first record of partition 0 of `topic` with each of `keys` (or, if
    `packed`, with an entry of each of those users)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from adoptstream.runtime import records

    tp = TopicPartition(topic, 0)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         max_partition_fetch_bytes=8 * 1024 * 1024)
    await c.start()
    found: dict[bytes, int] = {}
    try:
        c.assign([tp])
        end = (await c.end_offsets([tp]))[tp]
        begin = (await c.beginning_offsets([tp]))[tp]
        c.seek(tp, begin)
        pos, deadline = begin, time.monotonic() + 30
        while pos < end and time.monotonic() < deadline:
            got = await c.getmany(tp, timeout_ms=1000, max_records=50_000)
            for rec in got.get(tp, ()):
                pos = rec.offset + 1
                if rec.key is None and packed:  # a by-user pack: its entries name their users
                    rec_keys = [e[3].encode() for e in records.unpack(None, rec.value) if e[3] is not None]
                else:
                    rec_keys = [rec.key]
                for key in rec_keys:
                    if key in keys and key not in found:
                        found[key] = rec.timestamp
    finally:
        await c.stop()
    return found


def stage_latencies(bootstrap: str, topic: str, app_id: str, users: list[str],
                    produced_at: list[float], visible: dict[int, float]) -> dict[str, float]:
    """Median time per hop for the probes: producer -> input log -> by-user log -> changelog."""
    keys = [u.encode() for u in users[: len(produced_at)]]
    topics = [topic, f"{app_id}-{topic}-by-user", f"{app_id}-{topic}-state-changelog"]
    ts = {name: asyncio.run(_probe_timestamps(bootstrap, name, set(keys) | {b"u" + k for k in keys},
                                              packed=name == topics[1]))
          for name in topics}
    hops: dict[str, list[float]] = {"producer->input": [], "input->by-user (ingest)": [],
                                    "by-user->changelog (state)": [], "changelog->visible": []}
    for i, (k, t_prod) in enumerate(zip(keys, produced_at, strict=True)):
        t_in, t_by, t_cl = ts[topics[0]].get(k), ts[topics[1]].get(k), ts[topics[2]].get(b"u" + k)
        if t_in is not None:
            hops["producer->input"].append(t_in / 1000 - t_prod)
        if t_in is not None and t_by is not None:
            hops["input->by-user (ingest)"].append((t_by - t_in) / 1000)
        if t_by is not None and t_cl is not None:
            hops["by-user->changelog (state)"].append((t_cl - t_by) / 1000)
        if t_cl is not None and (i + 1) in visible:
            hops["changelog->visible"].append(visible[i + 1] - t_cl / 1000)
    return {f"{name} p50_s": round(percentile(v, 50), 3) for name, v in hops.items() if v} | {
        f"{name} p99_s": round(percentile(v, 99), 3) for name, v in hops.items() if v}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, help="background events/s (default: half the measured capacity)")
    p.add_argument("--capacity-events", type=int, default=200_000)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of live traffic (60)")
    p.add_argument("--probes-per-s", type=float, default=10.0)
    p.add_argument("--poll-ms", type=float, default=25.0, help="/metrics poll interval (25 ms)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--bootstrap")
    p.add_argument("--json")
    args = p.parse_args()
    common.exit_on_sigterm()

    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-fresh-{run_id}"
    app_id = f"bench-{run_id}-fresh"
    result: dict = {"poll_ms": args.poll_ms, "duration_s": args.duration, "probes_per_s": args.probes_per_s}
    with tempfile.TemporaryDirectory(prefix="adoptstream-fresh-") as tmp, \
            common.broker(args.bootstrap, Path(tmp)) as (bootstrap, _pid, kversion):
        result["machine"] = common.machine_info(kversion)
        common.create_topic(bootstrap, topic)
        worker = common.Worker(bootstrap, topic, Path(tmp) / "worker", app_id)
        with common.workers_cleanup([worker]):
            worker.start()
            worker.wait_ready()
            applied = 0
            if not args.rate:
                back, _ = common.load_events(args.capacity_events, args.users, args.seed)
                common.produce(bootstrap, topic, back)
                n = len(back)
                while True:
                    s = worker.samples(timeout=10, query=common.EVENTS_ONLY)
                    if s is not None and common.metric_sum(s, "adoptstream_events_total") >= n:
                        t_last = time.time()
                        break
                    if not worker.alive():
                        raise RuntimeError(worker.log_tail())
                    time.sleep(0.1)
                t_first = common.first_timestamp_s(bootstrap, f"{app_id}-{topic}-by-user")
                capacity = n / (t_last - (t_first or t_last - 1))
                rate = capacity / 2
                applied = n
                result["capacity_events_per_s"] = round(capacity)
                log(f"capacity {capacity:,.0f} events/s over {n:,} events -> live rate {rate:,.0f}/s")
            else:
                rate = args.rate
            result["rate"] = round(rate)
            need = int(rate * args.duration * 1.02) + 1000
            live_lines, _ = common.load_events(need, args.users, args.seed + 1)
            PROBE_USERS.extend(probe_users(int(args.duration * args.probes_per_s) + 5))
            poller = Poller(worker.port, args.poll_ms / 1000)
            poller.start()
            cpu0, t0 = common.proc_cpu_s(worker.pid), time.time()
            produced_at, sent = asyncio.run(
                live_phase(bootstrap, topic, live_lines, rate, args.duration, args.probes_per_s))
            t_end_produce = time.time()
            cpu1 = common.proc_cpu_s(worker.pid)
            # let the tail drain: every probe visible and every event applied
            deadline = time.monotonic() + 60
            total = 0.0
            while time.monotonic() < deadline:
                s = worker.samples(timeout=10, query=common.EVENTS_ONLY)
                total = common.metric_sum(s, "adoptstream_events_total") if s else 0.0
                seen = poller.points[-1][1] if poller.points else 0
                if total >= applied + sent and seen >= len(produced_at):
                    break
                time.sleep(0.2)
            drained_s = time.time() - t_end_produce
            poller.stop_flag.set()
            poller.join(timeout=5)
            rss = common.proc_status_kb(worker.pid, "VmRSS")
            final = worker.samples(timeout=10) or {}
            for stage in ("ingest", "state"):
                cnt = common.metric_sum(final, "adoptstream_batch_duration_seconds_count", stage=stage)
                dur = common.metric_sum(final, "adoptstream_batch_duration_seconds_sum", stage=stage)
                recs = common.metric_sum(final, "adoptstream_processed_records_total", stage=stage)
                if cnt:
                    result[f"{stage}_mean_batch_s"] = round(dur / cnt, 3)
                    result[f"{stage}_mean_batch_records"] = round(recs / cnt)
        result["hops"] = stage_latencies(bootstrap, topic, app_id, PROBE_USERS, produced_at,
                                         poller.first_time_at_least())
        first = poller.first_time_at_least()
        lat = [first[i + 1] - t for i, t in enumerate(produced_at) if (i + 1) in first]
        warm = [x for i, x in enumerate(lat) if produced_at[i] - produced_at[0] >= 5.0]  # skip 5 s warm-up
        result.update({
            "probes": len(produced_at), "probes_seen": len(lat), "events_sent": sent,
            "all_applied": total >= applied + sent, "drain_after_produce_s": round(drained_s, 2),
            "latency_p50_s": round(percentile(warm, 50), 3), "latency_p90_s": round(percentile(warm, 90), 3),
            "latency_p99_s": round(percentile(warm, 99), 3),
            "latency_max_s": round(max(warm, default=float("nan")), 3),
            "scrape_p50_ms": round(1000 * percentile(poller.scrape_s, 50), 1),
            "scrape_p99_ms": round(1000 * percentile(poller.scrape_s, 99), 1),
            "worker_cpu_util": round((cpu1 - cpu0) / (t_end_produce - t0), 2) if cpu0 and cpu1 else None,
            "worker_rss_mb": round(rss / 1024) if rss else None,
        })
    print(json.dumps(result, indent=2))
    print(f"freshness at {result['rate']:,} events/s (+{args.probes_per_s:g} probes/s, "
          f"poll {args.poll_ms:g} ms): p50 {result['latency_p50_s']:.3f} s, "
          f"p99 {result['latency_p99_s']:.3f} s, max {result['latency_max_s']:.3f} s "
          f"over {len(warm)} probes; "
          f"all applied: {result['all_applied']}")
    common.save_json(args.json, result)
    return 0 if result["all_applied"] and result["probes_seen"] == result["probes"] else 1


if __name__ == "__main__":
    sys.exit(main())
