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

from adoptstream.runtime.config import KafkaSettings
from adoptstream_dev import testing
from adoptstream_dev.testing import (  # noqa: F401  (re-exported for the bench scripts)
    Samples,
    WorkerProcess,
    contract_only,
    diff_samples,
    free_port,
    metric_sum,
    stopping,
    summed,
)

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
    from adoptstream_dev.localkafka import LocalKafka, kafka_version

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


def create_topic(
    bootstrap: str, topic: str, partitions: int = PARTITIONS, configs: dict[str, str] | None = None
) -> None:
    testing.create_topic(bootstrap, topic, partitions, configs)


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
    from adoptstream_dev.generate import TrafficGenerator

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


def kafka(bootstrap: str) -> KafkaSettings:
    """How the bench's clients reach the broker at `bootstrap` (plaintext, loopback)."""
    return KafkaSettings(broker=f"kafka://{bootstrap}")


async def _produce(bootstrap: str, topic: str, lines: list[bytes], partitions: int) -> float:
    from adoptstream.publish import Publisher

    pub = Publisher(kafka(bootstrap), topic, partitions=partitions, client_id="adoptstream-bench")
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


# ------------------------------------------------------------------------------------------ worker


@dataclass
class Worker(WorkerProcess):
    """The benchmarks' worker: `--partitions` of the bench, /metrics read with the fast parser.

    `samples()` gives None while the worker does not answer (yet): the benchmarks poll it.
    """

    def __post_init__(self) -> None:
        self.extra = ["--partitions", str(PARTITIONS), *self.extra]

    def samples(self, query: str = "", timeout: float = 5.0) -> Samples | None:  # type: ignore[override]
        try:
            status, text = self.get("/metrics" + query, timeout=timeout)
        except (OSError, urllib.error.URLError):
            return None
        return parse_metrics(text) if status == 200 else None


workers_cleanup = stopping


def save_json(path: str | Path | None, data: object) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def fmt_int(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"
