"""Scale-out and recovery: 1, 2, 3 workers on an 8-partition topic; joins, leaves and a SIGKILL mid-stream.

    .venv/bin/python bench/scaleout.py [--events 300000] [--users 1000000] [--bootstrap HOST:PORT]
                                       [--json OUT]

Phase 1, throughput: the same --events realistic events, pre-produced once; for k = 1, 2, 3, k fresh
  workers (same new app id, own data dirs) started together read them from offset 0: aggregate
  events/s from the first record seen (first CreateTime in the by-user topic) to the summed
  adoptstream_events_total reaching N, and every summed contract series compared with the pure core.
  (This box has 2 cores shared with the broker: more workers cannot add CPU here, so the numbers show
  the cost of coordination rather than the speed-up on a real multi-core deployment.)
Phase 2, membership changes mid-stream (one app id, a fresh topic), events arrive in five slices:
  slice 1 + worker A; slice 2 while B joins; slice 3 while C joins; slice 4 while A leaves (SIGTERM);
  slice 5 while B is SIGKILLed. After each step: wait until the summed events_total covers what was
  produced, then the summed contract series (all six families, every label set) must equal the pure
  core's numbers for everything produced so far; the time until they do is reported (for the kill:
  from the SIGKILL, including the session timeout that lets the group notice the dead member and the
  changelog restore of its partitions on the survivor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import log


class ExpectedModel:
    """The pure core fed with the same lines in order: the exact contract numbers at any moment."""

    def __init__(self) -> None:
        from adoptstream.core.state import SourceOutcomes

        self.users: dict = {}
        self.rejected = SourceOutcomes()
        self.offset = 0

    def add(self, lines: list[bytes], publish_now_ns: int) -> None:
        from adoptstream.core.entries import FutureEntry, InvalidEntry, event_entry
        from adoptstream.core.events import InvalidEvent, is_future, parse_event
        from adoptstream.core.state import UserState

        for line in lines:
            self.offset += 1
            try:
                ev = parse_event(line)
            except InvalidEvent:
                self.rejected.apply(InvalidEntry(0, self.offset, 0))
                continue
            st = self.users.get(ev.user_id)
            if st is None:
                st = self.users[ev.user_id] = UserState()
            if is_future(ev.ts_ns, publish_now_ns):
                st.apply(FutureEntry(0, self.offset, 0, ev.user_id))
            else:
                st.apply(event_entry(ev, 0, self.offset, 0))

    def samples(self, now_ns: int | None = None) -> common.Samples:
        from prometheus_client import CollectorRegistry, generate_latest

        from adoptstream.core.totals import AdoptionTotals
        from adoptstream.exposition.collector import AdoptionCollector

        totals = AdoptionTotals()
        for st in self.users.values():
            totals.add_user(st)
        totals.add_source(self.rejected)

        class _Src:
            def merged_totals(self) -> AdoptionTotals:
                return totals

        reg = CollectorRegistry()
        now = now_ns or time.time_ns()
        reg.register(AdoptionCollector(_Src(), 10_000, 10_000, clock_ns=lambda: now))
        return common.contract_only(common.parse_metrics(generate_latest(reg).decode()))


def summed_contract(workers: list[common.Worker]) -> common.Samples | None:
    pages = []
    for w in workers:
        s = w.samples(timeout=15)
        if s is None:
            return None
        pages.append(common.contract_only(s))
    return common.summed(pages)


def wait_exact(workers: list[common.Worker], model: ExpectedModel, n: int, t_from: float,
               timeout: float = 180) -> dict:
    """Wait until the summed events reach n and the contract equals the model; report how long."""
    deadline = time.monotonic() + timeout
    diff: list[str] = ["no scrape"]
    expected = model.samples()
    expected_at = time.time()
    while time.monotonic() < deadline:
        live = [w for w in workers if w.alive()]
        got = summed_contract(live)
        if got is not None and common.metric_sum(got, "adoptstream_events_total") >= n:
            if time.time() - expected_at > 60:  # active-user windows follow the clock
                expected, expected_at = model.samples(), time.time()
            diff = common.diff_samples(got, expected)
            if not diff:
                return {"exact": True, "seconds": round(time.time() - t_from, 2), "series": len(expected)}
        time.sleep(0.2)
    return {"exact": False, "seconds": None, "diff": diff}


def throughput(bootstrap: str, topic: str, k: int, n: int, model: ExpectedModel, tmp: Path) -> dict:
    app_id = f"bench-{uuid.uuid4().hex[:6]}-x{k}"
    workers = [common.Worker(bootstrap, topic, tmp / f"{app_id}-{i}", app_id) for i in range(k)]
    with common.workers_cleanup(workers):
        for w in workers:
            w.start()
        deadline = time.monotonic() + max(600, n / 300)
        t_last = None
        while time.monotonic() < deadline:
            pages = [w.samples(timeout=10) for w in workers]
            done = sum(common.metric_sum(p, "adoptstream_events_total") for p in pages if p is not None)
            if all(p is not None for p in pages) and done >= n:
                t_last = time.time()
                break
            for w in workers:
                if not w.alive():
                    raise RuntimeError(w.log_tail())
            time.sleep(0.1)
        if t_last is None:
            return {"workers": k, "error": "timeout"}
        t_first = common.first_timestamp_s(bootstrap, f"{app_id}-{topic}-by-user") or t_last
        cpu = sum(common.proc_cpu_s(w.pid) or 0 for w in workers)
        check = wait_exact(workers, model, n, t_last, timeout=60)
        rss = [round((common.proc_status_kb(w.pid, "VmHWM") or 0) / 1024) for w in workers]
        return {"workers": k, "events": n, "seconds": round(t_last - t_first, 2),
                "events_per_s": round(n / (t_last - t_first)), "cpu_s_total_incl_startup": round(cpu, 1),
                "exact": check["exact"], "diff": check.get("diff", []), "peak_rss_mb": rss}


def produce_async(bootstrap: str, topic: str, lines: list[bytes]) -> threading.Thread:
    def run() -> None:
        asyncio.run(common._produce(bootstrap, topic, lines, common.PARTITIONS))

    th = threading.Thread(target=run)
    th.start()
    return th


def membership(bootstrap: str, lines: list[bytes], tmp: Path) -> list[dict]:
    run = uuid.uuid4().hex[:6]
    topic, app_id = f"bench-members-{run}", f"bench-{run}-members"
    common.create_topic(bootstrap, topic)
    slices = [lines[i * len(lines) // 5:(i + 1) * len(lines) // 5] for i in range(5)]
    model = ExpectedModel()
    a, b, c = (common.Worker(bootstrap, topic, tmp / f"{app_id}-{x}", app_id) for x in "abc")
    steps: list[dict] = []
    produced = 0
    with common.workers_cleanup([a, b, c]):
        plan = [
            ("A starts", lambda: a.start(), [a]),
            ("B joins mid-stream", lambda: b.start(), [a, b]),
            ("C joins mid-stream", lambda: c.start(), [a, b, c]),
            ("A leaves mid-stream (SIGTERM)", lambda: a.stop(), [b, c]),
            ("B killed mid-stream (SIGKILL)", lambda: b.kill(), [c]),
        ]
        for (label, action, live), part in zip(plan, slices, strict=True):
            now_ns = time.time_ns()
            th = produce_async(bootstrap, topic, part)
            time.sleep(0.3)  # the slice is flowing when the membership changes
            t_change = time.time()
            action()
            th.join()
            model.add(part, now_ns)
            produced += len(part)
            res = wait_exact(live, model, produced, t_change, timeout=240)
            res.update({"step": label, "events_so_far": produced, "workers_live": len(live)})
            log(f"  {label}: exact={res['exact']} after {res['seconds']} s {res.get('diff', '')}")
            steps.append(res)
    return steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--workers", default="1,2,3")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-membership", action="store_true")
    p.add_argument("--bootstrap")
    p.add_argument("--json")
    args = p.parse_args()
    common.exit_on_sigterm()
    lines, source = common.load_events(args.events, args.users, args.seed)
    out: dict = {"events": len(lines), "source": source, "population": args.users}
    with tempfile.TemporaryDirectory(prefix="adoptstream-scaleout-") as tmp, \
            common.broker(args.bootstrap, Path(tmp)) as (bootstrap, _pid, kversion):
        out["machine"] = common.machine_info(kversion)
        if not args.skip_throughput:
            topic = f"bench-scaleout-{uuid.uuid4().hex[:6]}"
            now_ns = time.time_ns()
            common.produce(bootstrap, topic, lines)
            model = ExpectedModel()
            model.add(lines, now_ns)
            out["throughput"] = []
            for k in [int(x) for x in args.workers.split(",")]:
                log(f"throughput with {k} worker(s) ...")
                r = throughput(bootstrap, topic, k, len(lines), model, Path(tmp))
                log(f"  {r}")
                out["throughput"].append(r)
        if not args.skip_membership:
            log("membership changes mid-stream ...")
            out["membership"] = membership(bootstrap, lines, Path(tmp))
    print(json.dumps(out, indent=2))
    common.save_json(args.json, out)
    ok = all(r.get("exact") for r in out.get("throughput", [])) and all(
        s.get("exact") for s in out.get("membership", []))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
