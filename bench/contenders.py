"""The non-adoptstream contenders of bench/run.py, each run as its own process:

    python bench/contenders.py raw   --bootstrap B --topic T --group G --expect N --result OUT.json
    python bench/contenders.py faust --bootstrap B --topic T --group G --expect N --result OUT.json \
        [--store rocksdb]

* raw: aiokafka `getmany` + `orjson.loads` of every value, no state, no commits: the ceiling of a
  Python consumer on this broker.
* faust: the agent a user writes from faust's documentation: a JSON topic, `async for event in
  stream`, one table update per event (`uses_per_user[user_id] += 1`); the table has faust's default
  changelog; memory store (faust's default) or RocksDB (`--store rocksdb`).

Both write a JSON result when they have processed N messages: wall time of the first and the last
message (time.time(), same clock as the harness) and process CPU time (utime+stime of every thread)
at those two moments; the harness adds peak RSS from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path


def _write(result_path: str, **data: object) -> None:
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(result_path)


# ------------------------------------------------------------------------------------------ raw


async def run_raw(args: argparse.Namespace) -> None:
    import orjson
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    loads = orjson.loads
    seen = decoded = 0
    t_first = cpu_first = None
    try:
        while seen < args.expect:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            if not batch:
                continue
            if t_first is None:
                t_first, cpu_first = time.time(), time.process_time()
            for recs in batch.values():
                for rec in recs:
                    try:
                        loads(rec.value)
                        decoded += 1
                    except Exception:
                        pass
                seen += len(recs)
        t_last, cpu_last = time.time(), time.process_time()
    finally:
        await consumer.stop()
    _write(
        args.result,
        seen=seen,
        decoded=decoded,
        t_first=t_first,
        t_last=t_last,
        cpu_first=cpu_first,
        cpu_last=cpu_last,
    )


# ------------------------------------------------------------------------------------------ faust


def run_faust(args: argparse.Namespace) -> None:
    import faust

    store = "rocksdb://" if args.store == "rocksdb" else "memory://"
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store=store,
        topic_partitions=args.partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        datadir=args.datadir,
    )
    # as in faust's docs: a JSON topic and a table updated once per event
    events_topic = app.topic(args.topic, value_serializer="json", partitions=args.partitions)
    uses_per_user = app.Table("uses_per_user", default=int, partitions=args.partitions)
    progress = {"seen": 0, "t_first": None, "cpu_first": None}

    @app.agent(events_topic)
    async def count_events(events):  # type: ignore[no-untyped-def]
        async for event in events:
            progress["seen"] += 1
            if progress["t_first"] is None:
                progress["t_first"], progress["cpu_first"] = time.time(), time.process_time()
            if isinstance(event, dict) and isinstance(event.get("user_id"), str):
                uses_per_user[event["user_id"]] += 1
            if progress["seen"] == args.expect:
                _write(
                    args.result,
                    seen=progress["seen"],
                    keys=len(uses_per_user),
                    t_first=progress["t_first"],
                    t_last=time.time(),
                    cpu_first=progress["cpu_first"],
                    cpu_last=time.process_time(),
                )
                os.kill(os.getpid(), signal.SIGTERM)  # graceful stop through mode's signal handler

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["raw", "faust"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--store", choices=["memory", "rocksdb"], default="memory")
    p.add_argument("--datadir", default=".")
    args = p.parse_args()
    if args.kind == "raw":
        asyncio.run(run_raw(args))
    else:
        run_faust(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
