"""Side-by-side throughput benchmark of adoptstream (issue 4): `make bench` runs it.

    .venv/bin/python bench/run.py [--events 300000] [--users 1000000] [--bootstrap HOST:PORT]
                                  [--only raw,naive-faust,faust-batched,adoptstream] [--json OUT]
                                  [--profile]

One broker (its own LocalKafka on free loopback ports in a temp dir, or --bootstrap), one data set
(realistic events from adoptstream's TrafficGenerator spread over --users users, or --events-file),
produced once into one 8-partition topic keyed by user_id. Then each contender reads that topic from
offset 0 with its own consumer group / app id, one after the other (never concurrently):

  raw                  aiokafka getmany + orjson.loads per message, no state (the Python ceiling)
  naive-faust          the faust agent from faust's docs: one table update per event (memory store)
  naive-faust-rocksdb  the same with store="rocksdb://" (not in the default set: slow)
  faust-batched        a competent faust app: stream.take_events() batches, adoptstream's validation,
                       dedup and per-feature counters in Tables (memory store; contenders.py says
                       what it does not do)
  faust-batched-rocksdb  the same with store="rocksdb://" (not in the default set)
  adoptstream          the real worker subprocess, --store rocksdb: durable state + changelog, exact
                       contract metrics on /metrics

Clock (identical rule for every contender): from the first record seen to the last record applied.
  raw / faust: measured inside the contender (time.time() at the first and the N-th message; for
  faust-batched, the N-th message counted in its stats table).
  adoptstream: first = CreateTime of the earliest record in its by-user topic (the time the ingest
  stage received the first input batch, before parsing it); last = the /metrics scrape (every 100 ms)
  whose sum of adoptstream_events_total is N (conservative by up to one poll interval).
CPU s per million events = utime+stime of the contender process between those two moments.
Peak RSS = VmHWM of the contender process. Startup (interpreter, group join) is not in the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import log

ALL = ("raw", "naive-faust", "naive-faust-rocksdb", "faust-batched", "faust-batched-rocksdb", "adoptstream")
DEFAULT_ONLY = "raw,naive-faust,faust-batched,adoptstream"
# bench/contenders.py's kind for each subprocess contender, and the store it runs with
SUBPROCESS_KINDS = {
    "raw": ("raw", "memory"),
    "naive-faust": ("faust", "memory"),
    "naive-faust-rocksdb": ("faust", "rocksdb"),
    "faust-batched": ("faust-batched", "memory"),
    "faust-batched-rocksdb": ("faust-batched", "rocksdb"),
}


@dataclass
class Result:
    name: str
    events: int
    ok: bool = False
    seconds: float | None = None
    rate: float | None = None
    cpu_s: float | None = None
    cpu_s_per_m: float | None = None
    peak_rss_mb: float | None = None
    broker_cpu_s_per_m: float | None = None
    startup_s: float | None = None
    exact: str = "-"
    note: str = ""
    extra: dict = field(default_factory=dict)

    def finish(self, t_first: float, t_last: float, cpu_first: float, cpu_last: float) -> None:
        self.seconds = max(t_last - t_first, 1e-6)
        self.rate = self.events / self.seconds
        self.cpu_s = cpu_last - cpu_first
        self.cpu_s_per_m = self.cpu_s / self.events * 1e6
        self.ok = True


class CpuTrace:
    """(time, cpu seconds) samples of a few processes, to read a process's CPU at a given moment."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {k: v for k, v in pids.items() if v}
        self.samples: list[tuple[float, dict[str, float]]] = []

    def sample(self) -> None:
        now = time.time()
        vals = {}
        for name, pid in self.pids.items():
            cpu = common.proc_cpu_s(pid)
            if cpu is not None:
                vals[name] = cpu
        self.samples.append((now, vals))

    def at(self, name: str, t: float) -> float | None:
        """Linear interpolation of `name`'s CPU seconds at wall time t."""
        pts = [(ts, v[name]) for ts, v in self.samples if name in v]
        if not pts:
            return None
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(pts):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0)
        return pts[-1][1]


def _broker_share(res: Result, trace: CpuTrace, t_first: float, t_last: float) -> None:
    b0, b1 = trace.at("broker", t_first), trace.at("broker", t_last)
    if b0 is not None and b1 is not None:
        res.broker_cpu_s_per_m = (b1 - b0) / res.events * 1e6


# ------------------------------------------------------------------------------------------ contenders


def run_subprocess_contender(
    name: str, ctx: dict, expect: int, expected: common.Expected | None = None
) -> Result:
    """raw and faust: a bench/contenders.py process that reports its own first/last times and CPU.

    With `expected`, the contender's reported outcome and use counts are checked against it."""
    res = Result(name, expect)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=ctx["tmp"]))
    result_path = workdir / "result.json"
    group = f"bench-{ctx['run_id']}-{name}"
    kind, store = SUBPROCESS_KINDS[name]
    cmd = [
        sys.executable,
        str(common.BENCH_DIR / "contenders.py"),
        kind,
        "--bootstrap",
        ctx["bootstrap"],
        "--topic",
        ctx["topic"],
        "--group",
        group,
        "--expect",
        str(expect),
        "--result",
        str(result_path),
        "--partitions",
        str(common.PARTITIONS),
        "--datadir",
        str(workdir / "data"),
        "--store",
        store,
    ]
    log_path = workdir / "out.log"
    trace = CpuTrace({"broker": ctx["broker_pid"]})
    timeout = max(600.0, expect / 300)
    spawned = time.time()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, stdin=subprocess.DEVNULL
        )
    hwm = 0
    try:
        deadline = time.monotonic() + timeout
        while not result_path.exists():
            trace.sample()
            hwm = max(hwm, common.proc_status_kb(proc.pid, "VmHWM") or 0)
            if proc.poll() is not None and not result_path.exists():
                res.note = f"exited {proc.returncode} before finishing"
                break
            if time.monotonic() > deadline:
                res.note = f"timeout after {timeout:.0f} s"
                break
            time.sleep(0.1)
        hwm = max(hwm, common.proc_status_kb(proc.pid, "VmHWM") or 0)
        trace.sample()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    if result_path.exists():
        r = json.loads(result_path.read_text())
        res.finish(r["t_first"], r["t_last"], r["cpu_first"], r["cpu_last"])
        res.startup_s = r["t_first"] - spawned
        res.peak_rss_mb = hwm / 1024 if hwm else None
        _broker_share(res, trace, r["t_first"], r["t_last"])
        res.extra = {k: v for k, v in r.items() if k in ("seen", "decoded", "keys")}
        if expected is not None:
            res.exact = check_exact(r.get("outcomes", {}), r.get("uses", {}), expected)
        elif kind != "raw":
            res.exact = "n/a"
    else:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        log(f"{name} failed ({res.note}); output tail:\n{tail}")
    return res


def run_adoptstream(args: argparse.Namespace, ctx: dict, expected: common.Expected) -> Result:
    n = len(ctx["lines"])
    res = Result("adoptstream", n)
    app_id = f"bench-{ctx['run_id']}-as"
    data_dir = Path(tempfile.mkdtemp(prefix="bench-adoptstream-", dir=ctx["tmp"]))
    worker = common.Worker(ctx["bootstrap"], ctx["topic"], data_dir, app_id, store=args.store)
    profiler = None
    with common.workers_cleanup([worker]):
        worker.start()
        trace = CpuTrace({"broker": ctx["broker_pid"], "worker": worker.proc.pid})  # type: ignore[union-attr]
        deadline = time.monotonic() + max(300.0, n / 500)
        total = 0.0
        t_last = None
        samples = None
        while time.monotonic() < deadline:
            if not worker.alive():
                res.note = "worker exited"
                log(worker.log_tail())
                return res
            samples = worker.samples(timeout=10, query=common.EVENTS_ONLY)
            now = time.time()
            trace.sample()
            if samples is not None:
                if args.profile and profiler is None:
                    profiler = start_profiler(worker.proc.pid, ctx["tmp"])  # type: ignore[union-attr]
                total = common.metric_sum(samples, "adoptstream_events_total")
                if total >= n:
                    t_last = now
                    break
            time.sleep(0.1)
        hwm = common.proc_status_kb(worker.proc.pid, "VmHWM")  # type: ignore[union-attr]
        if profiler is not None:
            res.extra["profile"] = stop_profiler(profiler)
        if t_last is None or samples is None:
            res.note = f"timeout: {total:,.0f}/{n:,} events applied"
            log(worker.log_tail())
            return res
        t_first = common.first_timestamp_s(ctx["bootstrap"], f"{app_id}-{ctx['topic']}-by-user")
        if t_first is None:
            res.note = "no by-user records"
            return res
        cpu_first, cpu_last = trace.at("worker", t_first), trace.at("worker", t_last)
        res.finish(t_first, t_last, cpu_first or 0.0, cpu_last or 0.0)
        res.startup_s = t_first - worker.spawned_at
        res.peak_rss_mb = hwm / 1024 if hwm else None
        _broker_share(res, trace, t_first, t_last)
        res.exact = check_exact(*reported_counts(worker.samples(timeout=10) or {}), expected)
        res.extra["state_dir_mb"] = round(common.dir_bytes(data_dir) / 1e6, 1)
    return res


def reported_counts(samples: common.Samples) -> tuple[dict[str, float], dict[str, float]]:
    """Outcome counts and per-feature accepted uses as a worker's /metrics shows them."""
    outcomes: dict[str, float] = {}
    uses: dict[str, float] = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "adoptstream_events_total":
            outcomes[label["outcome"]] = outcomes.get(label["outcome"], 0.0) + value
        elif name == "adoptstream_feature_uses_total":
            uses[label["feature"]] = uses.get(label["feature"], 0.0) + value
    return outcomes, uses


def check_exact(outcomes: dict[str, float], uses: dict[str, float], expected: common.Expected) -> str:
    """Compare outcome counts and per-feature use counters with the pure core's numbers."""
    bad = []
    for outcome, want in expected.outcomes.items():
        got = outcomes.get(outcome, 0)
        if got != want:
            bad.append(f"{outcome} {got:.0f}!={want}")
    for feature, want in expected.uses.items():
        got = uses.get(feature, 0)
        if got != want:
            bad.append(f"uses[{feature}] {got:.0f}!={want}")
    return "yes" if not bad else "NO: " + ", ".join(bad[:4])


# ------------------------------------------------------------------------------------------ profiling


def start_profiler(pid: int, tmp: Path) -> tuple[subprocess.Popen, Path] | None:
    """py-spy (if installed in the venv) sampling the worker at 100 Hz without pausing it."""
    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        log("--profile: py-spy not installed (.venv/bin/pip install py-spy)")
        return None
    out = Path(tmp) / f"profile-{pid}.txt"
    proc = subprocess.Popen(
        [
            str(pyspy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, out


def stop_profiler(profiler: tuple[subprocess.Popen, Path] | None) -> dict:
    if profiler is None:
        return {}
    proc, out = profiler
    proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    if proc.poll() is None:
        proc.kill()
    import profile_summary

    if not out.exists():
        return {}
    dest = common.OUT_DIR / "profile-adoptstream.collapsed"
    common.OUT_DIR.mkdir(exist_ok=True)
    dest.write_bytes(out.read_bytes())
    return profile_summary.summarize(out)


# ------------------------------------------------------------------------------------------ report


def table(results: list[Result], ctx: dict) -> str:
    head = ("contender", "events/s", "seconds", "CPU s/M ev", "peak RSS MB", "broker CPU s/M", "exact")
    rows = [head]
    for r in results:
        if not r.ok:
            rows.append((r.name, "FAILED", "-", "-", "-", "-", r.note))
            continue
        rows.append(
            (
                r.name,
                f"{r.rate:,.0f}",
                f"{r.seconds:.2f}",
                f"{r.cpu_s_per_m:.1f}",
                f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "-",
                f"{r.broker_cpu_s_per_m:.1f}" if r.broker_cpu_s_per_m is not None else "-",
                r.exact,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        cells = [
            str(c).ljust(w) if j in (0, 6) else str(c).rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def ratio(a: Result | None, b: Result | None) -> str:
    if a is None or b is None or not a.ok or not b.ok:
        return "n/a"
    return f"{a.rate / b.rate:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--events",
        type=int,
        default=None,
        help="events in the data set (default 200000; with --events-file: the whole file)",
    )
    p.add_argument("--users", type=int, default=1_000_000, help="user population (1000000)")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--events-file", help="use these JSON lines (`adoptstream-dev generate -o`) instead")
    p.add_argument("--bootstrap", help="reuse this broker (HOST:PORT); default: start a LocalKafka")
    p.add_argument("--only", default=DEFAULT_ONLY, help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--store", choices=["rocksdb", "memory"], default="rocksdb", help="adoptstream's store")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--profile", action="store_true", help="py-spy the adoptstream worker during its run")
    args = p.parse_args()
    common.exit_on_sigterm()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}; choose from {','.join(ALL)}")
    common.OUT_DIR.mkdir(exist_ok=True)

    if args.events is None:
        args.events = 0 if args.events_file else 200_000
    lines, source = common.load_events(args.events, args.users, args.seed, args.events_file)
    desc = common.describe_events(lines)
    log(f"data set: {source}: {desc}")
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench-events-{run_id}"
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="adoptstream-bench-") as tmp,
        common.broker(args.bootstrap, Path(tmp)) as (bootstrap, broker_pid, kversion),
    ):
        info = common.machine_info(kversion)
        info["started"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        info["commit"] = source_commit()
        produce_s = common.produce(bootstrap, topic, lines)
        expected = common.expected_counts(lines)
        log(
            f"produced {len(lines):,} events to {topic} in {produce_s:.1f} s "
            f"({len(lines) / produce_s:,.0f}/s); expected outcomes {expected.outcomes}"
        )
        json_ok = sum(1 for ln in lines if common.key_of(ln) is not None or _is_json(ln))
        ctx = {
            "bootstrap": bootstrap,
            "broker_pid": broker_pid,
            "topic": topic,
            "lines": lines,
            "run_id": run_id,
            "tmp": Path(tmp),
        }
        for name in [c for c in ALL if c in only]:
            log(f"running {name} ...")
            if name == "adoptstream":
                r = run_adoptstream(args, ctx, expected)
            elif name == "raw":
                r = run_subprocess_contender(name, ctx, len(lines))
            elif name.startswith("naive-faust"):  # its JSON topic skips what is not JSON
                r = run_subprocess_contender(name, ctx, json_ok)
            else:
                r = run_subprocess_contender(name, ctx, len(lines), expected)
            results.append(r)
            if r.ok:
                log(
                    f"{name}: {r.rate:,.0f} events/s ({r.seconds:.2f} s, {r.cpu_s_per_m:.1f} CPU s/M, "
                    f"exact={r.exact}) {r.note}"
                )
    by = {r.name: r for r in results}
    print()
    print(
        f"adoptstream benchmark: {len(lines):,} events, {desc['distinct_users']:,} distinct users "
        f"(population {args.users:,}), {desc['bytes_p05']}-{desc['bytes_p95']} bytes (p5-p95), "
        f"{common.PARTITIONS} partitions, Kafka {kversion}"
    )
    print(
        f"machine: {info['cpus']} CPUs {info['cpu_model']}, {info['ram_gib']} GiB, "
        f"Python {info['python']}, load avg at start {info.get('load_avg_at_start', '?')}; "
        f"clock: first record seen -> last record applied; one contender at a time"
    )
    print(f"run: started {info['started']}, commit {info['commit']}")
    print()
    print(table(results, ctx))
    if "profile" in by.get("adoptstream", Result("", 1)).extra:
        import profile_summary

        print()
        print(profile_summary.render(by["adoptstream"].extra["profile"]))
    print()
    ratios = {
        f"adoptstream/{other}": ratio(by.get("adoptstream"), by.get(other))
        for other in ("naive-faust", "faust-batched", "raw")
    }
    for pair, value in ratios.items():
        print(f"{pair} ratio: {value}")
    common.save_json(
        args.json,
        {
            "machine": info,
            "data_set": {**desc, "source": source, "population": args.users},
            "produce_s": produce_s,
            "results": [asdict(r) for r in results],
            "ratios": ratios,
        },
    )
    common.save_json(common.OUT_DIR / "last_run.json", {"results": [asdict(r) for r in results]})
    exact = by.get("adoptstream", Result("", 1)).exact in ("yes", "-")
    return 0 if all(r.ok for r in results) and exact else 1


def source_commit() -> str:
    """The measured code's commit (short hash), marked when the work tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=common.REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=common.REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} + uncommitted changes" if dirty else head


def _is_json(line: bytes) -> bool:
    import orjson

    try:
        orjson.loads(line)
        return True
    except orjson.JSONDecodeError:
        return False


if __name__ == "__main__":
    sys.exit(main())
