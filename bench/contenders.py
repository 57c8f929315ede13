"""The non-adoptstream contenders of bench/run.py, each run as its own process:

    python bench/contenders.py raw           --bootstrap B --topic T --group G --expect N --result OUT.json
    python bench/contenders.py faust         ... [--store rocksdb]
    python bench/contenders.py faust-batched ... [--store rocksdb] [--batch 4000] [--within 0.5]

* raw: aiokafka `getmany` + `orjson.loads` of every value, no state, no commits: the ceiling of a
  Python consumer on this broker.
* faust (naive): the agent a user writes from faust's documentation: a JSON topic, `async for event in
  stream`, one table update per event (`uses_per_user[user_id] += 1`); the table has faust's default
  changelog; memory store (faust's default) or RocksDB (`--store rocksdb`).
* faust-batched: what a competent faust user writes in an afternoon for adoptstream's job (see
  `run_faust_batched`): `stream.take_events()` batches, adoptstream's own validation, a per-user Table
  with deduplication by (user_id, event_id), one changelog write per touched user and batch, and
  per-batch deltas summed per feature and outcome into a second Table by a second agent.

Each writes a JSON result when it has processed N messages: wall time of the first and the last
message (time.time(), same clock as the harness) and process CPU time (utime+stime of every thread)
at those two moments; the harness adds peak RSS from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


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


# ------------------------------------------------------------------------------------------ faust, batched

DEDUP_WINDOW_MS = 25 * 3_600_000  # as adoptstream: the contract's 24 h of arrivals plus an hour
FUTURE_REASON = "future: ts more than 5 minutes ahead"


def run_faust_batched(args: argparse.Namespace) -> None:
    """adoptstream's counting job written the way a competent faust user would.

    * Input read as raw bytes, validated by adoptstream's own `parse_event` and future check: the
      same outcomes as the product. Invalid and future messages go to `<group>.dlq` with the reason
      in a header.
    * `stream.take_events(batch, within)`: one batch of events at a time. faust refuses Table
      writes inside `take()` (a write's changelog partition and RocksDB shard come from the "current
      event", which a batch does not set: faust-streaming issue #497, open). So each event is made the
      current event through faust's own context variable while it is handled, and each touched user
      is written once at the end of the batch under its last event: the changelog partition is the
      event's input partition, as faust requires. That is co-partitioned only because this data set
      is keyed by user_id; the contract allows any key and partition, which adoptstream's by-user
      hop handles and faust would need a `group_by` hop for (one more produce per event).
    * Per user (JSON in the table): the event ids accepted in the last 25 h (dedup) and per feature
      the earliest exposure and use time.
    * Per batch, the changes of the per-outcome and per-feature counters (events, uses, newly exposed
      and newly adopted users) go to a `<group>-deltas` topic keyed by counter; a second agent adds
      them up in a `stats` Table: the faust way to aggregate across keys.

    What it does not do that adoptstream does: active-user windows (1d/7d/30d by event hour),
    cohorts, the time-to-first-use histogram, v2 feedback metrics, a /metrics page. It is
    at-least-once: after a crash the replayed batch finds its own event ids in the restored user table
    and counts them as duplicates, and the user table, the deltas and the offsets are not written
    atomically, so counters can be lost or doubled; adoptstream's state records the input offset it
    applied (replays are recognised) and writes state, changelog and totals snapshot together. The
    memory store restores the whole changelog at every start.
    """
    import weakref

    import faust
    from faust.streams import _current_event  # the one way to write a Table from a batch (docstring)

    from adoptstream.core.events import InvalidEvent, is_future, parse_event

    store = "rocksdb://" if args.store == "rocksdb" else "memory://"
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store=store,
        topic_partitions=args.partitions,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        datadir=args.datadir,
        # the table writes of a batch go through faust's producer one message at a time: let aiokafka
        # gather them into large batches (faust's defaults, 16 KB and no linger, were ~25% slower here)
        producer_linger_ms=5,
        producer_max_batch_size=1 << 20,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(args.topic, partitions=args.partitions, **raw)
    # Created before the worker starts, as a deployment would: faust ignores an agent's source topic
    # that does not exist yet when it subscribes, and a table whose changelog it has just created can
    # fail its partition check ("changelog topic ... has 0 partitions") while metadata catches up.
    asyncio.run(
        _create_topics(
            args.bootstrap,
            [f"{args.group}.dlq", f"{args.group}-deltas"],
            [f"{args.group}-users-changelog", f"{args.group}-stats-changelog"],
            args.partitions,
        )
    )
    dlq_topic = app.topic(f"{args.group}.dlq", partitions=args.partitions, **raw)
    deltas_topic = app.topic(f"{args.group}-deltas", key_type=str, value_type=int, partitions=args.partitions)
    users = app.Table("users", partitions=args.partitions, key_type=bytes)
    stats = app.Table("stats", default=int, partitions=args.partitions)
    # events taken, delta messages sent and summed, events counted in stats (all in this one process)
    progress: dict = {"seen": 0, "sent": 0, "summed": 0, "counted": 0, "t_first": None, "cpu_first": None}

    def mark_first(value: bytes) -> bytes:
        if progress["t_first"] is None:
            progress["t_first"], progress["cpu_first"] = time.time(), time.process_time()
        return value

    @app.agent(events_topic)
    @_stop_on_crash
    async def apply_events(stream):  # type: ignore[no-untyped-def]
        stream.add_processor(mark_first)  # runs as each event arrives, before take_events buffers it
        async for batch in stream.take_events(args.batch, within=args.within):
            now_ns = time.time_ns()
            horizon_ms = now_ns // 1_000_000 - DEDUP_WINDOW_MS
            touched: dict[bytes, tuple[dict, object]] = {}  # user key -> (state, its last event)
            deltas: dict[str, int] = {}
            for event in batch:
                _current_event.set(weakref.ref(event))
                value = event.value
                try:
                    ev = parse_event(value)
                    outcome, reason = ("future", FUTURE_REASON) if is_future(ev.ts_ns, now_ns) else ("", "")
                except InvalidEvent as exc:
                    outcome, reason = "invalid", exc.reason
                if outcome:
                    deltas[f"outcome:{outcome}"] = deltas.get(f"outcome:{outcome}", 0) + 1
                    await dlq_topic.send(key=event.key, value=value, headers=[("reason", reason.encode())])
                    continue
                key = ev.user_id.encode()
                entry = touched.get(key)
                if entry is None:
                    user = users.get(key)
                    if user is None:
                        user = {"seen": {}, "features": {}}
                    else:
                        user["seen"] = {k: t for k, t in user["seen"].items() if t >= horizon_ms}
                else:
                    user = entry[0]
                touched[key] = (user, event)
                if ev.event_id in user["seen"]:
                    deltas["outcome:duplicate"] = deltas.get("outcome:duplicate", 0) + 1
                    continue
                user["seen"][ev.event_id] = now_ns // 1_000_000
                deltas["outcome:accepted"] = deltas.get("outcome:accepted", 0) + 1
                _apply(user["features"], ev.type, ev.feature, ev.ts_ns, deltas)
            for key, (user, event) in touched.items():
                _current_event.set(weakref.ref(event))
                users[key] = user  # one changelog record per touched user and batch
            _current_event.set(None)
            progress["sent"] += len(deltas)  # before the sends: the other agent runs during them
            for counter, delta in deltas.items():
                await deltas_topic.send(key=counter, value=delta)
            progress["seen"] += len(batch)

    @app.agent(deltas_topic)
    @_stop_on_crash
    async def sum_deltas(stream):  # type: ignore[no-untyped-def]
        async for counter, delta in stream.items():
            stats[counter] += delta
            progress["summed"] += 1
            if counter.startswith("outcome:"):
                progress["counted"] += delta
            # done when every event has its outcome and every delta sent is summed: the deltas of
            # one batch are keyed by counter, so they arrive in several partitions, in any order
            if progress["counted"] == args.expect and progress["summed"] == progress["sent"]:
                outcomes = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("outcome:")}
                uses = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("uses:")}
                _write(
                    args.result,
                    seen=progress["seen"],
                    keys=len(users),
                    outcomes=outcomes,
                    uses=uses,
                    t_first=progress["t_first"],
                    t_last=time.time(),
                    cpu_first=progress["cpu_first"],
                    cpu_last=time.process_time(),
                )
                os.kill(os.getpid(), signal.SIGTERM)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def _stop_on_crash(agent: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """A crashed faust agent leaves its worker running idle: stop it, so that the harness sees it."""

    @functools.wraps(agent)
    async def run(stream: Any) -> None:
        try:
            await agent(stream)
        except Exception:
            traceback.print_exc()
            os.kill(os.getpid(), signal.SIGTERM)
            raise

    return run


async def _create_topics(bootstrap: str, plain: list[str], compacted: list[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    compact = {"cleanup.policy": "compact"}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, partitions, 1) for name in plain]
            + [NewTopic(name, partitions, 1, topic_configs=compact) for name in compacted]
        )
    finally:
        await admin.close()


def _apply(
    features: dict[str, list], etype: str, feature: str | None, ts_ns: int, deltas: dict[str, int]
) -> None:
    """One accepted event on a user's per-feature [earliest exposure, earliest use] times.

    A signup is the exposure of `*`, any use a use of `*` too; adopted = exposed and used (in
    either order), as in the contract.
    """

    def bump(counter: str) -> None:
        deltas[counter] = deltas.get(counter, 0) + 1

    if etype == "use":
        assert feature is not None
        bump(f"uses:{feature}")
        bump("uses:*")
        targets = ((feature, 1), ("*", 1))
    else:
        targets = (("*" if etype == "signup" else feature, 0),)  # type: ignore[assignment]
    for name, slot in targets:
        times = features.get(name)
        if times is None:
            times = features[name] = [None, None]
        first = times[slot] is None
        if first or ts_ns < times[slot]:
            times[slot] = ts_ns
        if first:
            if slot == 0:
                bump(f"exposed:{name}")
            if times[1 - slot] is not None:
                bump(f"adopted:{name}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["raw", "faust", "faust-batched"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--store", choices=["memory", "rocksdb"], default="memory")
    p.add_argument("--datadir", default=".")
    p.add_argument("--batch", type=int, default=4000, help="faust-batched: events per take_events batch")
    p.add_argument("--within", type=float, default=0.5, help="faust-batched: seconds to wait for a batch")
    args = p.parse_args()
    if args.kind == "raw":
        asyncio.run(run_raw(args))
    elif args.kind == "faust":
        run_faust(args)
    else:
        run_faust_batched(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
