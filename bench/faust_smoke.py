"""Smoke test: faust-streaming against the local Kafka (KRaft 4.x) broker.

    .venv/bin/python bench/faust_smoke.py [--bootstrap 127.0.0.1:9092] [--messages 20000] [--timeout 120]

Without --bootstrap it starts its own LocalKafka on free ports in a temp dir. It creates a topic,
produces N keyed messages with aiokafka, then runs a faust worker (memory store, one agent counting per
key into a Table) as a subprocess with a timeout. The worker SIGTERMs itself once the table holds N and
writes a JSON result file; the parent checks the counts and prints timings and the worker's warnings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RESULT_FILE = "result.json"


# ------------------------------------------------------------------ worker side (subprocess)


def run_worker(bootstrap: str, topic: str, expect: int, partitions: int) -> None:
    """A faust app counting messages per key into an in-memory Table; exits when it has seen `expect`."""
    import faust

    app = faust.App(
        f"smoke-{topic}", broker=f"kafka://{bootstrap}", store="memory://", topic_partitions=partitions,
        web_enabled=False, consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                       partitions=partitions)
    counts = app.Table("counts", default=int, partitions=partitions)
    started = time.monotonic()
    progress = {"seen": 0, "first": 0.0}

    @app.agent(source)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for key, _value in stream.items():
            counts[key] += 1
            progress["seen"] += 1
            if progress["seen"] == 1:
                progress["first"] = time.monotonic() - started
            if progress["seen"] == expect:
                total = sum(counts.values())
                result = {"seen": progress["seen"], "table_total": total, "keys": len(counts),
                          "first_message_s": round(progress["first"], 2),
                          "all_processed_s": round(time.monotonic() - started, 2)}
                Path(RESULT_FILE).write_text(json.dumps(result))  # cwd: the parent's temp dir
                os.kill(os.getpid(), signal.SIGTERM)  # graceful worker shutdown via mode's handler

    faust.Worker(app, loglevel="WARNING").execute_from_commandline()


# ------------------------------------------------------------------ parent side


async def prepare(bootstrap: str, topic: str, messages: int, keys: int, partitions: int) -> float:
    """Create the topic and produce `messages` keyed messages; return the produce time."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    t0 = time.monotonic()
    try:
        for i in range(messages):
            await producer.send(topic, f"v{i}".encode(), key=f"k{i % keys}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - t0


def run_smoke(bootstrap: str, args: argparse.Namespace) -> int:
    topic = f"faust-smoke-{uuid.uuid4().hex[:8]}"
    produce_s = asyncio.run(prepare(bootstrap, topic, args.messages, args.keys, args.partitions))
    print(f"produced {args.messages} messages ({args.keys} keys, {args.partitions} partitions) "
          f"to {topic} in {produce_s:.2f} s", flush=True)
    cmd = [sys.executable, __file__, "worker", "--bootstrap", bootstrap, "--topic", topic,
           "--expect", str(args.messages), "--partitions", str(args.partitions)]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:  # faust writes its data dir to the cwd
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=workdir)
        except subprocess.TimeoutExpired as exc:
            print(f"FAIL: faust worker did not finish within {args.timeout} s")
            print(_text(exc.stdout)[-3000:], _text(exc.stderr)[-3000:], sep="\n")
            return 1
        result_file = Path(workdir) / RESULT_FILE
        result_text = result_file.read_text() if result_file.exists() else ""
    wall = time.monotonic() - t0
    output = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", proc.stdout + proc.stderr).splitlines()
    errors = [ln for ln in output if any(w in ln for w in ("ERROR", "Traceback", "Exception", "WARNING"))]
    print(f"faust worker exit code {proc.returncode}, wall {wall:.2f} s (with interpreter start, shutdown)")
    if errors:
        print(f"{len(errors)} warning/error lines from the worker, first ones:")
        print("\n".join(f"  {ln[:300]}" for ln in errors[:15]))
    if not result_text:
        print("FAIL: no result from the worker; its output tail:")
        print("\n".join(output[-40:]))
        return 1
    result = json.loads(result_text)
    print("result:", json.dumps(result))
    ok = result["table_total"] == args.messages and result["keys"] == min(args.keys, args.messages)
    rate = args.messages / max(result["all_processed_s"] - result["first_message_s"], 1e-9)
    print(f"{'OK' if ok else 'FAIL'}: table total {result['table_total']} / {args.messages}, "
          f"~{rate:,.0f} msg/s after the first message")
    return 0 if ok else 1


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("mode", nargs="?", default="smoke", choices=["smoke", "worker"])
    parser.add_argument("--bootstrap", help="existing broker; default: start a LocalKafka on free ports")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120, help="seconds for the faust worker")
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "worker":
        run_worker(args.bootstrap, args.topic, args.expect, args.partitions)
        return 0
    if args.bootstrap:
        return run_smoke(args.bootstrap, args)
    from adoptstream_dev.localkafka import LocalKafka
    from adoptstream_dev.testing import free_port

    with tempfile.TemporaryDirectory(prefix="faust-smoke-kafka-") as tmp:
        t0 = time.monotonic()
        with LocalKafka(free_port(), Path(tmp), die_with_parent=True) as broker:
            print(f"local Kafka at {broker.bootstrap} ready in {time.monotonic() - t0:.1f} s", flush=True)
            return run_smoke(broker.bootstrap, args)


if __name__ == "__main__":
    sys.exit(main())
