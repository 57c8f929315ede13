"""Shared pieces of the adoptstream benchmarks (bench/*.py): broker, data set, producing, measuring.

Everything here binds or connects to 127.0.0.1 only, and every process it starts is stopped by its
context manager / `stop()` even when a benchmark fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"  # git-ignored: cached data sets, logs, JSON results
PARTITIONS = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def exit_on_sigterm() -> None:
    """SIGTERM runs the `finally` blocks (brokers and workers are stopped) like Ctrl-C does."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ /proc


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current RSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def dir_bytes(path: Path) -> int:
    """Bytes allocated on disk by every file under `path` (like `du -s`: sparse files count what they use)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def machine_info(kafka_version: str | None = None) -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    info = {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "ram_gib": f"{mem_kb / 1024 / 1024:.1f}",
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    if kafka_version:
        info["kafka"] = kafka_version
    with contextlib.suppress(Exception):
        info["load_avg_at_start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


# ------------------------------------------------------------------------------------------ broker


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path | None = None) -> Iterator[tuple[str, int | None, str]]:
    """Yield (bootstrap, broker pid or None, kafka version): the given broker, or a fresh LocalKafka."""
    from adoptstream.localkafka import LocalKafka, free_port, kafka_version

    version = kafka_version()
    if bootstrap:
        yield bootstrap, None, version
        return
    tmp = Path(tempfile.mkdtemp(prefix="adoptstream-bench-kafka-", dir=workdir))
    kafka = LocalKafka(free_port(), tmp, die_with_parent=True)
    t0 = time.monotonic()
    try:
        kafka.start()
        log(f"local Kafka {version} at {kafka.bootstrap} ready in {time.monotonic() - t0:.1f} s ({tmp})")
        yield kafka.bootstrap, kafka.pid(), version
    finally:
        with contextlib.suppress(Exception):
            kafka.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _create_topic(bootstrap: str, topic: str, partitions: int, configs: dict[str, str] | None) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
        deadline = time.monotonic() + 30
        while topic not in set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} did not appear")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def create_topic(
    bootstrap: str, topic: str, partitions: int = PARTITIONS, configs: dict | None = None
) -> None:
    asyncio.run(_create_topic(bootstrap, topic, partitions, configs))


# ------------------------------------------------------------------------------------------ data set


def _user_id(idx: int) -> str:
    """A stable, realistic-looking user id for population index `idx` (same mix as the generator)."""
    h = (idx * 2654435761) & 0xFFFFFFFF
    tag = f"{h:08x}"[:6]
    kind = idx % 20
    tenants = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
    if kind < 16:
        return f"usr_{tag}{idx:05x}"
    if kind < 19:
        return f"user{idx}.{tag}@{tenants[idx % 8]}.example"
    names = ("zoë.müller", "田中.太郎", "łukasz.wójcik", "søren.ølgaard", "amélie.côté", "иван.петров")
    return f"{names[idx % 6]}.{idx}@{tenants[idx % 8]}.example"


def population_user(user_id: str, event_id: str, users: int, skew: float) -> str:
    """Map one generated event onto a population of `users` users.

    The index comes from a hash of (generated user, event id), so a retried duplicate (same bytes)
    lands on the same user and stays a duplicate. `skew` > 1 makes user activity uneven: index =
    users * u**skew, so low indices are power users (skew 2: the busiest 10% of users send ~32% of
    the events).
    """
    h = zlib.crc32(f"{user_id}\x00{event_id}".encode())
    u = (h + 0.5) / 4294967296.0
    return _user_id(min(users - 1, int(users * u**skew)))


def build_events(
    n: int, users: int, seed: int, skew: float = 2.0, invalid_ratio: float = 0.001
) -> list[bytes]:
    """`n` realistic event lines (TrafficGenerator: story-driven types, Zipf feature popularity,
    all `ts` formats, ~1% retried duplicates, 3% out of order, a few invalid lines) spread over a
    population of `users` users."""
    from adoptstream.generate import TrafficGenerator

    gen = TrafficGenerator(seed, users=max(1000, int(n * 0.04)), invalid_ratio=invalid_ratio)
    out: list[bytes] = []
    loads, dumps = orjson.loads, orjson.dumps
    for line in gen.events(n):
        try:
            obj = loads(line)
        except orjson.JSONDecodeError:
            out.append(line)
            continue
        if type(obj) is dict and type(obj.get("user_id")) is str and type(obj.get("event_id")) is str:
            obj["user_id"] = population_user(obj["user_id"], obj["event_id"], users, skew)
            out.append(dumps(obj))
        else:
            out.append(line)
    return out


def load_events(n: int, users: int, seed: int, events_file: str | None = None) -> tuple[list[bytes], str]:
    """The benchmark's event lines: from `events_file` (JSON lines), else generated (cached in bench/out)."""
    if events_file:
        data = Path(events_file).read_bytes().splitlines()
        lines = [ln.rstrip(b"\r") for ln in data if ln.strip()]
        if n and n < len(lines):
            lines = lines[:n]
        return lines, f"file {events_file}"
    OUT_DIR.mkdir(exist_ok=True)
    cache = OUT_DIR / f"events-{n}-{users}-{seed}.jsonl"
    if cache.exists():
        lines = cache.read_bytes().split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        if len(lines) == n:
            return lines, f"cached {cache.name}"
    t0 = time.monotonic()
    lines = build_events(n, users, seed)
    tmp = cache.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(lines) + b"\n")
    tmp.replace(cache)
    log(f"generated {n:,} events over {users:,} users in {time.monotonic() - t0:.1f} s -> {cache.name}")
    return lines, f"generated (seed {seed})"


def describe_events(lines: list[bytes]) -> dict[str, object]:
    sizes = sorted(len(x) for x in lines)
    users: set[str] = set()
    types: dict[str, int] = {}
    for line in lines:
        with contextlib.suppress(Exception):
            obj = orjson.loads(line)
            users.add(obj["user_id"])
            types[obj["type"]] = types.get(obj["type"], 0) + 1
    return {
        "events": len(lines),
        "distinct_users": len(users),
        "bytes_p05": sizes[len(sizes) // 20],
        "bytes_p50": sizes[len(sizes) // 2],
        "bytes_p95": sizes[len(sizes) * 19 // 20],
        "types": types,
    }


@dataclass
class Expected:
    """Outcome counts and per-feature accepted uses, from the pure core applied in order."""

    outcomes: dict[str, int] = field(default_factory=dict)
    uses: dict[str, int] = field(default_factory=dict)


def expected_counts(lines: list[bytes], now_ns: int | None = None) -> Expected:
    """What adoptstream_events_total and adoptstream_feature_uses_total must show after `lines`.

    Duplicates are exact here because every line is published within a few minutes (well inside
    the contract's 24 h dedup window)."""
    from adoptstream.core.events import InvalidEvent, is_future, parse_event

    now_ns = now_ns or time.time_ns()
    seen: set[tuple[str, str]] = set()
    out = {"accepted": 0, "duplicate": 0, "invalid": 0, "future": 0}
    uses: dict[str, int] = {}
    for line in lines:
        try:
            ev = parse_event(line)
        except InvalidEvent:
            out["invalid"] += 1
            continue
        if is_future(ev.ts_ns, now_ns):
            out["future"] += 1
            continue
        key = (ev.user_id, ev.event_id)
        if key in seen:
            out["duplicate"] += 1
            continue
        seen.add(key)
        out["accepted"] += 1
        if ev.type == "use":
            uses[ev.feature] = uses.get(ev.feature, 0) + 1  # type: ignore[index]
    uses["*"] = sum(uses.values())
    return Expected(out, uses)


# ------------------------------------------------------------------------------------------ producing


def key_of(line: bytes) -> bytes | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    uid = obj.get("user_id") if type(obj) is dict else None
    return uid.encode() if type(uid) is str and uid else None


async def _produce(bootstrap: str, topic: str, lines: list[bytes], partitions: int) -> float:
    from adoptstream.publish import Publisher

    pub = Publisher(bootstrap, topic, partitions=partitions, client_id="adoptstream-bench")
    await pub.start()
    t0 = time.monotonic()
    try:
        for i, line in enumerate(lines):
            pub.add(line)
            if i % 4096 == 0 and pub.pending_batches():
                await pub.send_pending(include_open=False)
        await pub.flush()
    finally:
        await pub.stop()
    if pub.stats.sent != len([x for x in lines if x and not x.isspace()]):
        raise RuntimeError(f"produced only {pub.stats.sent} of {len(lines)}: {pub.stats.as_dict()}")
    return time.monotonic() - t0


def produce(bootstrap: str, topic: str, lines: list[bytes], partitions: int = PARTITIONS) -> float:
    """Publish `lines` keyed by user_id (murmur2, like the Java client); return the seconds it took."""
    create_topic(bootstrap, topic, partitions)
    return asyncio.run(_produce(bootstrap, topic, lines, partitions))


async def _first_timestamps(bootstrap: str, topic: str) -> list[int]:
    """CreateTime (ms) of the first record of every partition of `topic`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        begin = await c.beginning_offsets(tps)
        end = await c.end_offsets(tps)
        todo = [tp for tp in tps if end[tp] > begin[tp]]
        for tp in todo:
            c.seek(tp, begin[tp])
        out: list[int] = []
        deadline = time.monotonic() + 20
        while todo and time.monotonic() < deadline:
            got = await c.getmany(*todo, timeout_ms=500, max_records=1)
            for tp, recs in got.items():
                if recs and tp in todo:
                    out.append(recs[0].timestamp)
                    todo.remove(tp)
                    c.pause(tp)
        return out
    finally:
        await c.stop()


def first_timestamp_s(bootstrap: str, topic: str) -> float | None:
    ts = asyncio.run(_first_timestamps(bootstrap, topic))
    return min(ts) / 1000 if ts else None


# ------------------------------------------------------------------------------------------ metrics

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# Progress polls ask for the outcome counter alone: the worker then skips building the adoption
# families (a full page costs it a few ms, which a 100 ms poll would take from the measured run).
EVENTS_ONLY = "?name[]=adoptstream_events_total"


def parse_metrics(text: str, prefixes: tuple[str, ...] = ("adoptstream_",)) -> Samples:
    """Samples of a Prometheus text page whose name starts with one of `prefixes` (fast, no validation)."""
    out: Samples = {}
    for line in text.splitlines():
        if not line or line[0] == "#" or not line.startswith(prefixes):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        lab = tuple(sorted(_LABEL_RE.findall(labels))) if labels else ()
        out[(name, lab)] = float(value)
    return out


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


CONTRACT_PREFIXES = (
    "adoptstream_events_total",
    "adoptstream_active_users",
    "adoptstream_exposed_users",
    "adoptstream_adopted_users",
    "adoptstream_time_to_first_use_seconds",
    "adoptstream_feature_uses_total",
)


def contract_only(samples: Samples) -> Samples:
    return {
        k: v
        for k, v in samples.items()
        if k[0].startswith(CONTRACT_PREFIXES) and not k[0].endswith("_created")
    }


def summed(pages: list[Samples]) -> Samples:
    total: dict = {}
    for page in pages:
        for k, v in page.items():
            total[k] = total.get(k, 0.0) + v
    return total


def diff_samples(a: Samples, b: Samples, limit: int = 8) -> list[str]:
    """Human-readable differences between two sample sets (missing series count as 0).

    Every series must be equal, except histogram `_sum`s (float seconds): adding them up over workers
    rounds in the last bits, exactly as Prometheus's own `sum` does, so they compare to 1e-12 relative.
    """
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, 0.0), b.get(k, 0.0)
        if va == vb or (k[0].endswith("_sum") and abs(va - vb) <= 1e-12 * max(abs(va), abs(vb))):
            continue
        out.append(f"{k[0]}{dict(k[1])}: {va} != {vb}")
        if len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------------------------------ worker


def free_port() -> int:
    from adoptstream.localkafka import free_port as fp

    return fp()


@dataclass
class Worker:
    """One real `adoptstream worker` subprocess (its own data dir, /metrics on a free loopback port)."""

    bootstrap: str
    topic: str
    data_dir: Path
    app_id: str
    store: str = "rocksdb"
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    wrap: list[str] = field(default_factory=list)  # e.g. a profiler command line prefix
    spawned_at: float = 0.0

    def start(self) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"worker-{self.port}.log"
        cmd = [
            *self.wrap, sys.executable, "-m", "adoptstream", "worker",
            "--broker", f"kafka://{self.bootstrap}", "--topic", self.topic,
            "--web-port", str(self.port), "--web-host", "127.0.0.1",
            "--data-dir", str(self.data_dir), "--app-id", self.app_id, "--store", self.store,
            "--partitions", str(PARTITIONS), *self.extra,
        ]
        env = {**os.environ, "ADOPTSTREAM_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        self.spawned_at = time.time()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, cwd=str(REPO))
        return self

    @property
    def pid(self) -> int:
        """The worker's own pid (the Python process, also when wrapped by a profiler)."""
        assert self.proc is not None
        if not self.wrap:
            return self.proc.pid
        with contextlib.suppress(OSError):
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if kids:
                return int(kids[0])
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def samples(self, timeout: float = 5.0, query: str = "") -> Samples | None:
        """The worker's /metrics (`query`: e.g. EVENTS_ONLY), or None when it does not answer (yet)."""
        try:
            status, text = self.get("/metrics" + query, timeout=timeout)
        except (OSError, urllib.error.URLError):
            return None
        return parse_metrics(text) if status == 200 else None

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.log_tail()}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError, urllib.error.URLError):
                if self.get("/ready", timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"worker on :{self.port} not ready in {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            self.proc.wait(timeout=10)  # type: ignore[union-attr]

    def stop(self, timeout_s: float = 30.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM if not self.wrap else signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def workers_cleanup(workers: list[Worker]) -> Iterator[list[Worker]]:
    """Stops (then kills) every worker in the list on exit, whatever happened."""
    try:
        yield workers
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                w.stop(timeout_s=15)
            with contextlib.suppress(Exception):
                w.kill()


def save_json(path: str | Path | None, data: object) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def fmt_int(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"
