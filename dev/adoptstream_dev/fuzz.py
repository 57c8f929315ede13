"""`adoptstream-dev fuzz`: hostile messages at volume through a real broker, every one accounted for.

`messages()` yields a deterministic mix (per seed): valid events, mutated ones (bytes flipped, cut,
inserted, fields dropped or retyped), random bytes, invalid UTF-8, deep nesting on both sides of the
cap, huge values on both sides of the 64 KiB limit (a few near the broker's 1 MB), wrong field types,
tombstones, exact repeats, odd keys (none, empty, binary, 10 KB) and odd headers (binary, empty name,
null value, repeated). `Expected` follows them with the pure core: the outcome of each and the digest
of each rejected message (key, value, headers). `check_run` publishes them, lets one real worker
process them, and checks that it never stops, that `adoptstream_events_total` gives every message its
outcome, and that the dead-letter topic holds every rejected message byte for byte, no more.

Event times stay clear of the 5-minute future horizon (at least an hour either side of it over a
long run), so that a message's outcome does not depend on when the worker reads it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from adoptstream.core.events import InvalidEvent, Outcome, parse_event
from adoptstream_dev.testing import WorkerProcess, create_topic, metric_sum, poll_until

Headers = tuple[tuple[str, bytes | None], ...]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PARTITIONS = 8
DLQ_HEADERS = 3  # the worker appends reason, outcome and source to a dead letter's own headers
FEATURES = ("search", "export.csv", "dark-mode", "ai/assist", "billing:v2", "x" * 128)
COHORTS = ("wave-1", "pilot", "Dept Sales", "ring 0", "ünïcödé", "c" * 64)


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes | None
    headers: Headers
    kind: str  # what the generator meant it to be (for the figures only)


def digest(key: bytes | None, value: bytes | None, headers: Headers) -> bytes:
    """One message's identity: its key, value and headers, each told apart from absent."""
    h = hashlib.blake2b(digest_size=16)
    for part in (key, value, *(x for name, v in headers for x in (name.encode(), v))):
        h.update(b"-" if part is None else b"+%d:" % len(part) + part)
    return h.digest()


@dataclass
class Expected:
    """What the worker must report for the messages `add`ed, by the pure core."""

    future_after_ns: int  # the future horizon of every message (see the module doc)
    outcomes: Counter[str] = field(default_factory=Counter)
    rejected: Counter[bytes] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, m: Message) -> None:
        self.kinds[m.kind] += 1
        try:
            event = parse_event(m.value)
        except InvalidEvent:
            self._reject(m, Outcome.INVALID)
            return
        if event.ts_ns > self.future_after_ns:
            self._reject(m, Outcome.FUTURE)
            return
        key = (event.user_id, event.event_id)
        self.outcomes[(Outcome.DUPLICATE if key in self._seen else Outcome.ACCEPTED).value] += 1
        self._seen.add(key)

    def _reject(self, m: Message, outcome: Outcome) -> None:
        self.outcomes[outcome.value] += 1
        self.rejected[digest(m.key, m.value, m.headers)] += 1

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


class Fuzzer:
    """The message mix of one seed; `now_ms` anchors event times (valid ones an hour or more before)."""

    def __init__(self, seed: int, now_ms: int, users: int = 5_000) -> None:
        self.rng = random.Random(seed)
        self.now_ms = now_ms
        self.users = users
        self._recent: list[Message] = []

    def messages(self, count: int) -> Iterator[Message]:
        makers = (
            (self.valid, 30),
            (self.mutated, 25),
            (self.wrong_types, 10),
            (self.random_bytes, 8),
            (self.invalid_utf8, 5),
            (self.repeat, 6),
            (self.future, 3),
            (self.deep, 2),
            (self.tombstone, 2),
            (self.huge, 0.25),
        )
        weights = [w for _, w in makers]
        for _ in range(count):
            (make,) = self.rng.choices([m for m, _ in makers], weights)
            message = make()
            if len(self._recent) < 1000:
                self._recent.append(message)
            else:
                self._recent[self.rng.randrange(1000)] = message
            yield message

    # -- kinds ---------------------------------------------------------------------------------------

    def event(self) -> dict:
        rng = self.rng
        user = rng.randrange(self.users)
        etype = rng.choice(("signup", "exposure", "use", "use"))
        obj: dict = {
            "event_id": f"e{rng.getrandbits(40):x}" if rng.random() < 0.9 else f"e{rng.randrange(50)}",
            "user_id": rng.choice((f"user-{user}", f"ユーザー{user}", f"u{user}@example.com")),
            "type": etype,
            "ts": self.now_ms - HOUR_MS - rng.randrange(40 * DAY_MS),
        }
        if etype != "signup":
            obj["feature"] = rng.choice(FEATURES)
        if rng.random() < 0.4:
            obj["cohort"] = rng.choice(COHORTS)
        if rng.random() < 0.1:
            obj["ts"] = _iso(obj["ts"])
        if rng.random() < 0.1:
            obj["extra"] = {"app": "web", "list": [1, 2.5, None, True], "s": "x" * rng.randrange(100)}
        return obj

    def valid(self) -> Message:
        obj = self.event()
        return Message(self.key(obj["user_id"]), orjson.dumps(obj), self.headers(), "valid")

    def future(self) -> Message:
        obj = self.event()
        obj["ts"] = self.now_ms + 6 * HOUR_MS + self.rng.randrange(30 * DAY_MS)
        return Message(self.key(obj["user_id"]), orjson.dumps(obj), self.headers(), "future")

    def mutated(self) -> Message:
        rng = self.rng
        raw = bytearray(orjson.dumps(self.event()))
        for _ in range(rng.choice((1, 1, 2, 5))):
            how = rng.random()
            at = rng.randrange(len(raw)) if raw else 0
            if how < 0.4 and raw:
                raw[at] = rng.randrange(256)
            elif how < 0.6:
                del raw[at : at + rng.randrange(1, 20)]
            elif how < 0.8:
                raw[at:at] = rng.randbytes(rng.randrange(1, 8))
            else:
                raw[at:at] = rng.choice((b'"', b"{", b"}", b"[", b",", b":", b"\\", b"\\u", b"\x00"))
        return self.settled(Message(self.key(None), bytes(raw), self.headers(), "mutated"))

    def wrong_types(self) -> Message:
        rng = self.rng
        obj = self.event()
        name = rng.choice(("event_id", "user_id", "type", "ts", "feature", "cohort"))
        obj[name] = rng.choice((None, True, 12, -1.5, 1e308, [], {}, "", "x" * 300))
        if rng.random() < 0.3:
            del obj[rng.choice(list(obj))]
        return self.settled(Message(self.key(None), orjson.dumps(obj), self.headers(), "wrong-types"))

    def random_bytes(self) -> Message:
        return Message(self.key(None), self.rng.randbytes(self.rng.randrange(300)), self.headers(), "random")

    def invalid_utf8(self) -> Message:
        obj = self.event()
        raw = orjson.dumps(obj).replace(b'"user_id":"', b'"user_id":"\xff\xfe', 1)
        return Message(self.key(None), raw, self.headers(), "invalid-utf8")

    def deep(self) -> Message:
        depth = self.rng.choice((10, 1000, 1023, 1024, 2000, 30_000))
        raw = orjson.dumps(self.event())[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
        return Message(self.key(None), raw, self.headers(), "deep")

    def huge(self) -> Message:
        rng = self.rng
        size = rng.choice((65_000, 65_536, 66_000, 100_000, 200_000))
        if rng.random() < 0.02:
            size = 1_000_000  # near the broker's default message limit
        obj = self.event()
        pad = max(0, size - len(orjson.dumps(obj)) - 10)
        obj["pad"] = "p" * pad
        return Message(self.key(None), orjson.dumps(obj), self.headers(), "huge")

    def tombstone(self) -> Message:
        return Message(self.key(None) or b"k", None, self.headers(), "tombstone")

    def repeat(self) -> Message:
        if not self._recent:
            return self.valid()
        m = self.rng.choice(self._recent)
        return Message(self.key(None) if self.rng.random() < 0.5 else m.key, m.value, m.headers, "repeat")

    # -- keys, headers, and keeping clear of the horizon ---------------------------------------------

    def key(self, user_id: str | None) -> bytes | None:
        rng = self.rng
        roll = rng.random()
        if user_id is not None and roll < 0.5:
            return user_id.encode()
        if roll < 0.7:
            return None
        if roll < 0.8:
            return b""
        if roll < 0.95:
            return rng.randbytes(rng.randrange(1, 40))
        return rng.randbytes(10_000)

    def headers(self) -> Headers:
        rng = self.rng
        if rng.random() < 0.7:
            return ()
        pool = (
            ("trace-id", rng.randbytes(16)),
            ("", b"empty name"),
            ("null-value", None),
            ("ünïcödé", "värde".encode()),
            ("dup", b"1"),
            ("dup", b"2"),
            ("adoptstream-reason", b"a header of the sender's own"),
            ("big", rng.randbytes(2000)),
        )
        return tuple(rng.sample(pool, rng.randrange(1, 4)))

    def settled(self, m: Message) -> Message:
        """A mutated message whose time fell near the horizon is made invalid instead (see module doc)."""
        try:
            event = parse_event(m.value)
        except InvalidEvent:
            return m
        if self.now_ms - HOUR_MS < event.ts_ns // 1_000_000 < self.now_ms + 5 * HOUR_MS:
            return Message(m.key, b"!" + (m.value or b""), m.headers, m.kind)
        return m


def _iso(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000)) + f".{ts_ms % 1000:03d}Z"


# -- through a broker -------------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, messages: Iterator[Message], expected: Expected) -> int:
    """Publish every message (round robin over the partitions, batched), following it in `expected`."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=2 << 20
    )
    await producer.start()
    try:
        batches = [producer.create_batch() for _ in range(PARTITIONS)]
        pending: list[asyncio.Future] = []
        count = 0
        for m in messages:
            expected.add(m)
            p = count % PARTITIONS
            headers = list(m.headers)
            if batches[p].append(key=m.key, value=m.value, timestamp=None, headers=headers) is None:
                pending.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=m.key, value=m.value, timestamp=None, headers=headers)
            count += 1
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending = []
        for p, batch in enumerate(batches):
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
        return count
    finally:
        await producer.stop()


async def dead_letters(bootstrap: str, topic: str, count: int, timeout_s: float) -> Counter[bytes]:
    """The digests of the dead-letter topic's messages (their own headers, without the worker's)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    got: Counter[bytes] = Counter()
    deadline = time.monotonic() + timeout_s
    try:
        while sum(got.values()) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=50_000)).values():
                for r in records:
                    got[digest(r.key, r.value, tuple(r.headers)[:-DLQ_HEADERS])] += 1
        # nothing more than expected: read on briefly for stragglers
        for records in (await consumer.getmany(timeout_ms=2000)).values():
            for r in records:
                got[digest(r.key, r.value, tuple(r.headers)[:-DLQ_HEADERS])] += 1
    finally:
        await consumer.stop()
    return got


@dataclass
class Report:
    messages: int
    produce_s: float
    process_s: float
    expected: dict[str, int]
    reported: dict[str, int]
    dead_letters: int
    kinds: dict[str, int]

    def lines(self) -> list[str]:
        rate = self.messages / self.process_s if self.process_s else 0
        return [
            f"{self.messages:,} messages produced in {self.produce_s:.0f} s, all given an outcome "
            f"{self.process_s:.0f} s after the worker started ({rate:,.0f}/s)",
            "outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.reported.items())),
            f"dead-letter topic: {self.dead_letters:,} messages, each rejected one byte for byte",
            "generated: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.kinds.items())),
        ]


def check_run(bootstrap: str, topic: str, data_dir: Path, count: int, seed: int, timeout_s: float) -> Report:
    """Publish `count` messages, run one worker over them, and check every number (AssertionError)."""
    now_ms = time.time_ns() // 1_000_000
    create_topic(bootstrap, topic, PARTITIONS)
    # the horizon of every message: valid ones are older than now - 1 h, future ones newer than now + 5 h
    expected = Expected(future_after_ns=(now_ms + 3 * HOUR_MS) * 1_000_000)
    started = time.monotonic()
    produced = asyncio.run(produce(bootstrap, topic, Fuzzer(seed, now_ms).messages(count), expected))
    produce_s = time.monotonic() - started
    worker = WorkerProcess(bootstrap, topic, data_dir, app_id=topic).start()
    try:
        started = time.monotonic()
        worker.wait_serving()

        def outcomes() -> dict[str, int]:
            worker.assert_alive()
            page = worker.samples(query="?name[]=adoptstream_events_total", timeout=30)
            return {
                o: int(metric_sum(page, "adoptstream_events_total", outcome=o)) for o in expected.outcomes
            }

        poll_until(
            lambda: sum(outcomes().values()) >= produced, timeout_s, "every message given an outcome", 1.0
        )
        process_s = time.monotonic() - started
        reported = outcomes()
        assert reported == dict(expected.outcomes), (reported, dict(expected.outcomes))
        rejected = sum(expected.rejected.values())
        letters = asyncio.run(dead_letters(bootstrap, f"{topic}.dlq", rejected, timeout_s=300))
        assert letters == expected.rejected, (
            f"{sum(letters.values())} dead letters, {rejected} expected; "
            f"{len(letters - expected.rejected)} unexpected, {len(expected.rejected - letters)} missing"
        )
        worker.wait_ready(timeout_s=60)  # no partition held: nothing stuck
        worker.assert_alive()
    finally:
        worker.stop()
    return Report(
        produced, produce_s, process_s, dict(expected.outcomes), reported, rejected, dict(expected.kinds)
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fuzz",
        help="hostile messages at volume through a local broker and a worker; every one accounted for",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--messages", type=int, default=1_000_000, help="how many (default 1,000,000)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--timeout", type=float, default=3600, help="seconds the worker may take (3600)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adoptstream_dev.localkafka import LocalKafka
    from adoptstream_dev.testing import free_port

    with tempfile.TemporaryDirectory(prefix="adoptstream-fuzz-") as tmp:
        broker = LocalKafka(free_port(), Path(tmp) / "kafka", die_with_parent=True)
        broker.start()
        try:
            report = check_run(
                broker.bootstrap, "fuzz", Path(tmp) / "worker", args.messages, args.seed, args.timeout
            )
        except AssertionError as exc:
            print(f"adoptstream-dev fuzz: FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            broker.stop()
    print("\n".join(report.lines()))
    return 0
