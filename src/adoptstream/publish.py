"""`adoptstream publish FILE|-`: JSON lines to the input topic, fast and byte for byte.

Each line becomes one message: the value is the line's bytes exactly (only the line terminator is
stripped), the key is the line's `user_id` (null when it has none or the line is not JSON). Records go
straight into aiokafka batch builders, one per partition (murmur2 on the key, like the Java client), and a
batch is handed to the producer when full; only the final flush waits for acknowledgements (acks=all).
The input streams in chunks, so files of any size work in constant memory.

`Publisher` is the reusable part: `adoptstream-dev generate --rate` and `adoptstream-dev demo` publish
with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import stat
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from adoptstream.core.events import MAX_EVENT_BYTES, InvalidEvent, parse_event
from adoptstream.runtime.config import ConfigError, KafkaSettings, TopicSettings, add_flags, from_flags
from adoptstream.runtime.connection import BrokerUnreachable, check_connection, client_options
from adoptstream.runtime.topics import check_created

DEFAULT_BATCH_BYTES = 512 * 1024
# the broker's default message.max.bytes is 1,048,588 per record batch: a line must fit in one
MAX_LINE_BYTES = 1_000_000
READ_CHUNK = 1 << 20
_KEY_CACHE_MAX = 200_000


class PublishError(RuntimeError):
    """The publisher cannot work at all (broker unreachable, topic unusable)."""


@dataclass(slots=True)
class PublishStats:
    """What happened to every input line."""

    lines: int = 0  # lines read, blank ones included
    queued: int = 0  # handed to the producer
    sent: int = 0  # acknowledged by the broker
    bytes_sent: int = 0  # value bytes acknowledged
    invalid: int = 0  # not sent: fails the contract (only with skip_invalid)
    too_large: int = 0  # not sent: larger than the limit
    blank: int = 0  # not sent: empty or whitespace-only
    send_failed: int = 0  # not acknowledged: the broker or the network refused it
    invalid_reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def rejected(self) -> int:
        return self.invalid + self.too_large + self.blank + self.send_failed

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "sent": self.sent,
            "bytes": self.bytes_sent,
            "rejected": {
                "invalid": self.invalid,
                "too_large": self.too_large,
                "blank": self.blank,
                "send_failed": self.send_failed,
            },
            "invalid_reasons": dict(self.invalid_reasons),
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate, 1),
        }


class Publisher:
    """Batched, keyed producer of raw lines to one topic. `add` is synchronous; sends are awaited."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        skip_invalid: bool = False,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
        partitions: int = 8,
        replication_factor: int = 1,
        create_topic: bool = True,
        client_id: str = "adoptstream-publish",
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.skip_invalid = skip_invalid
        self.batch_bytes = batch_bytes
        self.max_line_bytes = MAX_EVENT_BYTES if skip_invalid else max_line_bytes
        self.partitions_wanted = partitions
        self.replication_factor = replication_factor
        self.create_topic = create_topic
        self.client_id = client_id
        self.stats = PublishStats()
        self._producer: AIOKafkaProducer | None = None
        self._partitions: list[int] = []
        self._open: dict[int, list[Any]] = {}  # partition -> [builder, records, bytes]
        self._full: list[tuple[int, Any, int, int]] = []  # (partition, builder, records, bytes)
        self._inflight: set[asyncio.Future[Any]] = set()
        self._keys: dict[str, tuple[bytes, int]] = {}
        self._sticky = 0
        self._ts_ms = 0

    async def start(self) -> None:
        """Connect, create the topic when missing, learn its partitions.

        Raises `ConnectionSettingError` (a `ConfigError`) when the broker refuses the TLS or SASL
        settings, `PublishError` when it cannot be reached or the topic cannot be used.
        """
        try:
            await check_connection(self.kafka)
        except BrokerUnreachable as exc:
            raise PublishError(str(exc)) from None
        if self.create_topic:
            await self._ensure_topic()
        producer = AIOKafkaProducer(
            **client_options(self.kafka),
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            max_batch_size=self.batch_bytes,
            max_request_size=max(self.batch_bytes, self.max_line_bytes) + 65_536,
            request_timeout_ms=30_000,
        )
        try:
            await producer.start()
            self._partitions = sorted(await producer.partitions_for(self.topic))
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise PublishError(
                f"cannot publish to {self.topic} at {self.kafka.bootstrap_servers}: {exc!r}"
            ) from None
        if not self._partitions:
            await producer.stop()
            raise PublishError(f"topic {self.topic} has no partitions")
        self._producer = producer
        self._sticky = random.choice(self._partitions)

    async def _ensure_topic(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(**client_options(self.kafka), client_id=f"{self.client_id}-admin")
        try:
            await admin.start()
        except (KafkaError, OSError) as exc:
            raise PublishError(
                f"cannot reach the broker at {self.kafka.bootstrap_servers}: {exc!r}"
            ) from None
        try:
            if self.topic in set(await admin.list_topics()):
                return
            topic = NewTopic(self.topic, self.partitions_wanted, self.replication_factor)
            with contextlib.suppress(TopicAlreadyExistsError):
                check_created(await admin.create_topics([topic]))
            deadline = time.monotonic() + 30
            while self.topic not in set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise PublishError(f"topic {self.topic} did not appear within 30 s")
                await asyncio.sleep(0.1)
        except KafkaError as exc:  # e.g. not allowed to create topics: let the producer try anyway
            print(f"publish: could not create topic {self.topic}: {exc!r}", file=sys.stderr)
        finally:
            await admin.close()

    # -- adding lines ----------------------------------------------------------------------------

    def add(self, line: bytes) -> bool:
        """Queue one line (without its terminator); False when it is skipped (counted in `stats`)."""
        stats = self.stats
        stats.lines += 1
        if not line or line.isspace():
            stats.blank += 1
            return False
        if len(line) > self.max_line_bytes:
            stats.too_large += 1
            return False
        user_id: object = None
        if self.skip_invalid:
            try:
                user_id = parse_event(line).user_id
            except InvalidEvent as exc:
                stats.invalid += 1
                stats.invalid_reasons[_short_reason(exc.reason)] += 1
                return False
        else:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if type(obj) is dict:
                user_id = obj.get("user_id")
        if type(user_id) is str and user_id:
            cached = self._keys.get(user_id)
            if cached is None:
                key = user_id.encode("utf-8", "surrogatepass")
                partitions = self._partitions
                cached = (key, partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)])
                if len(self._keys) >= _KEY_CACHE_MAX:
                    self._keys.clear()
                self._keys[user_id] = cached
            key_bytes, partition = cached
        else:
            key_bytes, partition = None, self._sticky
        self._append(partition, key_bytes, line)
        return True

    def _append(self, partition: int, key: bytes | None, value: bytes) -> None:
        assert self._producer is not None, "start() first"
        entry = self._open.get(partition)
        if entry is None:
            entry = self._open[partition] = [self._producer.create_batch(), 0, 0]
        if entry[0].append(key=key, value=value, timestamp=self._ts_ms or None) is None:
            # full: hand it over and start a new one (the first record always fits)
            self._full.append((partition, entry[0], entry[1], entry[2]))
            entry[0], entry[1], entry[2] = self._producer.create_batch(), 0, 0
            entry[0].append(key=key, value=value, timestamp=self._ts_ms or None)
            if key is None:
                self._sticky = random.choice(self._partitions)
        entry[1] += 1
        entry[2] += len(value)
        self.stats.queued += 1

    def pending_batches(self) -> int:
        """Full batches waiting for `send_pending()`."""
        return len(self._full)

    def set_timestamp(self, ts_ms: int | None) -> None:
        """Record timestamp (CreateTime) for the next records; None: the clock at each append."""
        self._ts_ms = ts_ms or 0

    # -- sending ---------------------------------------------------------------------------------

    async def send_pending(self, include_open: bool = True) -> None:
        """Hand full batches (and open ones unless `include_open` is False) to the producer.

        Waits only for room in the producer's queue (backpressure), not for acknowledgements.
        """
        ready, self._full = self._full, []
        if include_open:
            ready += [(p, e[0], e[1], e[2]) for p, e in self._open.items() if e[1]]
            self._open = {}
        for partition, builder, count, size in ready:
            await self._send(partition, builder, count, size)

    async def _send(self, partition: int, builder: Any, count: int, size: int) -> None:
        assert self._producer is not None
        try:
            fut = await self._producer.send_batch(builder, self.topic, partition=partition)
        except (KafkaError, OSError) as exc:
            self._failed(count, exc)
            return
        self._inflight.add(fut)
        fut.add_done_callback(lambda f: self._done(f, count, size))

    def _done(self, fut: asyncio.Future[Any], count: int, size: int) -> None:
        self._inflight.discard(fut)
        if fut.cancelled():
            self._failed(count, asyncio.CancelledError())
        elif fut.exception() is not None:
            self._failed(count, fut.exception())  # type: ignore[arg-type]
        else:
            self.stats.sent += count
            self.stats.bytes_sent += size

    def _failed(self, count: int, exc: BaseException) -> None:
        self.stats.send_failed += count
        self.stats.errors[f"{type(exc).__name__}: {exc}"[:200]] += count

    async def flush(self) -> None:
        """Send everything queued and wait until each batch is acknowledged or failed."""
        await self.send_pending(include_open=True)
        while self._inflight:
            await asyncio.wait(list(self._inflight))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close the producer (what was not flushed is abandoned after `timeout_s`)."""
        if self._producer is None:
            return
        producer, self._producer = self._producer, None
        try:
            await asyncio.wait_for(producer.stop(), timeout=timeout_s)
        except (TimeoutError, KafkaError) as exc:
            print(f"publish: producer did not stop cleanly: {exc!r}", file=sys.stderr)


def _short_reason(reason: str) -> str:
    """Group invalid reasons: drop the JSON decoder's position details."""
    return reason.split(":", 1)[0] if reason.startswith("not strict JSON") else reason


async def read_lines(
    stream: BinaryIO, max_line_bytes: int, on_chunk: Any = None
) -> AsyncIterator[list[bytes | None]]:
    """Lines of `stream` (terminator stripped), a chunk at a time, read off the event loop.

    A line longer than `max_line_bytes` is not kept in memory: it comes out as None.
    """
    loop = asyncio.get_running_loop()
    reader = getattr(stream, "read1", stream.read)
    rest = b""
    discarding = False
    while True:
        chunk = await loop.run_in_executor(None, reader, READ_CHUNK)
        if on_chunk is not None:
            on_chunk(len(chunk))
        if not chunk:
            break
        out: list[bytes | None] = []
        parts = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = parts.pop()
        for part in parts:
            if discarding:  # the end of an oversized line
                discarding = False
                out.append(None)
                continue
            out.append(part[:-1] if part.endswith(b"\r") else part)
        if len(rest) > max_line_bytes + 1:
            discarding, rest = True, b""
        if out:
            yield out
    if discarding:
        yield [None]
    elif rest:
        yield [rest[:-1] if rest.endswith(b"\r") else rest]


async def publish_stream(
    stream: BinaryIO,
    publisher: Publisher,
    *,
    progress: bool = False,
    total_bytes: int | None = None,
) -> PublishStats:
    """Publish every line of `stream` through a started `publisher`; return its stats when all acked."""
    from tqdm import tqdm

    stats = publisher.stats
    started = time.monotonic()
    bar = tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        file=sys.stderr,
        desc="publish",
        dynamic_ncols=True,
    )
    try:
        async for lines in read_lines(stream, publisher.max_line_bytes, bar.update):
            publisher.set_timestamp(time.time_ns() // 1_000_000)
            for line in lines:
                if line is None:
                    stats.lines += 1
                    stats.too_large += 1
                else:
                    publisher.add(line)
            if publisher.pending_batches():
                await publisher.send_pending(include_open=False)
            bar.set_postfix_str(f"{stats.sent:,} acked", refresh=False)
        await publisher.flush()
        bar.set_postfix_str(f"{stats.sent:,} acked")
    finally:
        stats.elapsed_s = time.monotonic() - started
        bar.close()
    return stats


def format_summary(stats: PublishStats, topic: str, interrupted: bool = False) -> str:
    """The human summary printed at the end."""
    mb = stats.bytes_sent / 1e6
    head = "publish: interrupted; " if interrupted else "publish: "
    lines = [
        f"{head}sent {stats.sent:,} lines ({mb:,.1f} MB) to {topic} in {stats.elapsed_s:.2f} s: "
        f"{stats.rate:,.0f} lines/s, {mb / stats.elapsed_s if stats.elapsed_s else 0:,.1f} MB/s",
        f"publish: rejected {stats.rejected:,}: {stats.invalid:,} invalid, {stats.too_large:,} too large, "
        f"{stats.blank:,} blank lines skipped, {stats.send_failed:,} send failures",
    ]
    for reason, n in stats.invalid_reasons.most_common(8):
        lines.append(f"  invalid {n:,}: {reason}")
    for error, n in stats.errors.most_common(5):
        lines.append(f"  failed {n:,}: {error}")
    return "\n".join(lines)


# -- CLI -------------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "publish",
        help="publish JSON lines (a file or -) to the input topic, keyed by user_id",
        description="Publish one message per line: value = the line's bytes exactly, key = its user_id. "
        "By default every non-blank line is sent (the worker dead-letters invalid ones).",
    )
    p.add_argument("file", metavar="FILE", help="JSON lines file, or - for stdin")
    add_flags(p, TopicSettings)
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="do not send lines that fail contract validation (counted in the summary instead)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_BYTES,
        metavar="BYTES",
        help=f"bytes per partition batch, 16384-1000000 (default {DEFAULT_BATCH_BYTES})",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    p.add_argument("--json", action="store_true", help="also print the summary as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = from_flags(TopicSettings, args)
    except ConfigError as exc:
        print(f"adoptstream publish: {exc}", file=sys.stderr)
        return 2
    if not 16_384 <= args.batch_size <= 1_000_000:
        print("adoptstream publish: --batch-size must be between 16384 and 1000000", file=sys.stderr)
        return 2
    try:
        stream: BinaryIO = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"adoptstream publish: {exc}", file=sys.stderr)
        return 2
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        return asyncio.run(_run(stream, settings, args, progress))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


async def _run(stream: BinaryIO, settings: TopicSettings, args: argparse.Namespace, progress: bool) -> int:
    publisher = Publisher(
        settings,
        settings.topic,
        skip_invalid=args.skip_invalid,
        batch_bytes=args.batch_size,
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
    )
    try:
        await publisher.start()
    except ConfigError as exc:  # a refused login or certificate
        print(f"adoptstream publish: {exc}", file=sys.stderr)
        return 2
    except PublishError as exc:
        print(f"adoptstream publish: {exc}", file=sys.stderr)
        return 1
    info = os.fstat(stream.fileno()) if hasattr(stream, "fileno") else None
    total = info.st_size if info is not None and stat.S_ISREG(info.st_mode) else None
    interrupted = False
    try:
        await publish_stream(stream, publisher, progress=progress, total_bytes=total)
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        await publisher.stop(timeout_s=5.0 if interrupted else 30.0)
        print(format_summary(publisher.stats, settings.topic, interrupted), file=sys.stderr)
        if args.json:
            sys.stdout.write(orjson.dumps(publisher.stats.as_dict()).decode() + "\n")
            sys.stdout.flush()
    return 1 if publisher.stats.send_failed else 0
