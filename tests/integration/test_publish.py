"""`adoptstream publish` against a real broker: values byte for byte, keys = user_id, honest summary."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from adoptstream.core.events import InvalidEvent, parse_event
from adoptstream_dev.generate import TrafficGenerator
from adoptstream_dev.testing import free_port

pytestmark = pytest.mark.integration

NOW_MS = 1_767_225_600_000


def run_publish(*args: str, stdin: bytes | None = None) -> tuple[int, dict[str, Any], str]:
    """Run the CLI; return (exit code, --json summary, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "adoptstream", "publish", *args, "--json"],
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    stdout = proc.stdout.decode().strip()
    summary = orjson.loads(stdout.splitlines()[-1]) if stdout else {}
    return proc.returncode, summary, proc.stderr.decode()


async def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[Any]:
    """Every record of `topic` from the beginning, once `expected` of them arrived (or the deadline)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )  # no group: every partition, from the start
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        # nothing beyond what we expect
        extra = await consumer.getmany(timeout_ms=500)
        records.extend(r for recs in extra.values() for r in recs)
        return records
    finally:
        await consumer.stop()


def expected_key(line: bytes) -> bytes | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("user_id"), str) and obj["user_id"]:
        return obj["user_id"].encode()
    return None


@pytest.fixture(scope="module")
def input_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes], int, int]:
    """Generated lines (5% invalid) plus awkward ones; returns (file, lines to send, blank, too large)."""
    gen = TrafficGenerator(11, 500, now_ms=NOW_MS, invalid_ratio=0.05, duplicate_ratio=0.02)
    lines = list(gen.events(3000))
    awkward = [
        b'{"event_id":"x1","user_id":"\xc3\xa9lodie \xe2\x98\x83","type":"use","feature":"search","ts":1}',
        b'{"event_id":"x2","type":"use","feature":"search","ts":1}',  # no user_id: null key
        b'{"event_id":"x3","user_id":42,"type":"use","feature":"search","ts":1}',  # not a string
        b"not json at all",
        b'  {"event_id":"x4","user_id":"spaced","type":"use","feature":"search","ts":1}  ',
        # contract v2: answers and task times, valid and not
        b'{"event_id":"v1","user_id":"u-v2","type":"feedback","scale":"nps","score":9,"ts":1}',
        b'{"event_id":"v2","user_id":"u-v2","type":"use","feature":"search","duration_ms":1500,"ts":1}',
        b'{"event_id":"v3","user_id":"u-v2","type":"feedback","scale":"csat","score":5.0,"ts":1}',
        b'{"event_id":"v4","user_id":"u-v2","type":"feedback","scale":"ces","score":8,"ts":1}',
        b'{"event_id":"v5","user_id":"u-v2","type":"feedback","scale":"stars","score":4,"ts":1}',
        b'{"event_id":"v6","user_id":"u-v2","type":"use","feature":"search","duration_ms":"10","ts":1}',
    ]
    lines[100:100] = awkward
    body = bytearray()
    for i, line in enumerate(lines):
        body += line + (b"\r\n" if i % 97 == 0 else b"\n")  # some CRLF terminators
        if i % 500 == 0:
            body += b"\n   \n"  # blank and whitespace-only lines
    blank = 2 * len(range(0, len(lines), 500))
    body += b"x" * 1_200_000 + b"\n"  # too large for one message
    last = b'{"event_id":"last","user_id":"u-last","type":"signup","ts":"2026-01-01T00:00:00Z"}'
    body += last  # no newline at the end
    lines.append(last)
    path = tmp_path_factory.mktemp("publish") / "events.jsonl"
    path.write_bytes(bytes(body))
    return path, lines, blank, 1


def test_publish_file_byte_identical(kafka_broker: Any, unique_topic: str, input_file: Any) -> None:
    path, lines, blank, too_large = input_file
    code, summary, stderr = run_publish(
        str(path), "--broker", f"kafka://{kafka_broker.bootstrap}", "--topic", unique_topic
    )
    assert code == 0, stderr
    assert summary["sent"] == len(lines)
    assert summary["rejected"] == {"invalid": 0, "too_large": too_large, "blank": blank, "send_failed": 0}
    assert summary["lines"] == len(lines) + blank + too_large
    assert summary["bytes"] == sum(len(line) for line in lines)
    assert f"sent {len(lines):,} lines" in stderr and "blank lines skipped" in stderr

    records = asyncio.run(consume_all(kafka_broker.bootstrap, unique_topic, len(lines)))
    assert Counter(r.value for r in records) == Counter(lines)  # byte for byte, nothing extra
    partitions = {r.partition for r in records}
    assert len(partitions) > 1  # created with several partitions
    n_parts = 8
    for r in records:
        assert r.key == expected_key(r.value)
        if r.key is not None:  # the Java client's partitioner: same user, same partition anywhere
            assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % n_parts
    # keyed lines keep the file's order within their partition
    expected: dict[int, list[bytes]] = {}
    for line in lines:
        key = expected_key(line)
        if key is not None:
            expected.setdefault((murmur2(key) & 0x7FFFFFFF) % n_parts, []).append(line)
    actual: dict[int, list[bytes]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is not None:
            actual.setdefault(r.partition, []).append(r.value)
    assert actual == expected


def test_publish_stdin_skip_invalid(kafka_broker: Any, unique_topic: str, input_file: Any) -> None:
    path, lines, blank, too_large = input_file
    valid = []
    reasons = 0
    for line in lines:
        try:
            parse_event(line)
            valid.append(line)
        except InvalidEvent:
            reasons += 1
    assert reasons > 100
    code, summary, stderr = run_publish(
        "-",
        "--skip-invalid",
        "--batch-size",
        "16384",
        "--broker",
        f"kafka://{kafka_broker.bootstrap}",
        "--topic",
        unique_topic,
        stdin=path.read_bytes(),
    )
    assert code == 0, stderr
    assert summary["sent"] == len(valid)
    assert summary["rejected"]["invalid"] == reasons
    assert summary["rejected"]["blank"] == blank
    assert summary["rejected"]["too_large"] == too_large
    assert sum(summary["invalid_reasons"].values()) == reasons
    held_back = summary["invalid_reasons"]  # the v2 lines that break the contract, each with its reason
    assert held_back["score must be a JSON integer from 1 to 5 on the csat scale"] >= 1
    assert held_back["score must be a JSON integer from 1 to 7 on the ces scale"] >= 1
    assert held_back["scale must be one of nps, csat, ces"] >= 1
    assert held_back["duration_ms must be a JSON integer from 0 to 86400000"] >= 1
    assert {line for line in valid if b'"u-v2"' in line} == {  # the valid answer and task time are sent
        b'{"event_id":"v1","user_id":"u-v2","type":"feedback","scale":"nps","score":9,"ts":1}',
        b'{"event_id":"v2","user_id":"u-v2","type":"use","feature":"search","duration_ms":1500,"ts":1}',
    }
    records = asyncio.run(consume_all(kafka_broker.bootstrap, unique_topic, len(valid)))
    assert Counter(r.value for r in records) == Counter(valid)
    assert all(r.key == expected_key(r.value) for r in records)


def test_unreachable_broker_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(b'{"event_id":"a","user_id":"u","type":"signup","ts":1}\n')
    started = time.monotonic()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "adoptstream", "publish", str(path)),
            *("--broker", f"127.0.0.1:{free_port()}", "--connect-timeout-ms", "3000"),
        ],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert b"no Kafka broker answered" in proc.stderr and b"Traceback" not in proc.stderr
    assert time.monotonic() - started < 3 + 10  # the connection timeout, and Python's start
