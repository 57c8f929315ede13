"""Topic changes are detected, never a silent skip, double count or wipe: a recreated input topic (while
the worker is down or running), more by-user partitions, a recreated changelog. `adoptstream reset` is
the way back, and afterwards the numbers are exact again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from adoptstream.runtime.config import WorkerConfig
from adoptstream_dev.testing import WorkerProcess, create_topic, metric_sum, poll_until, stopping
from tests.integration.dataset import build_dataset
from tests.integration.test_exactness import assert_exact, publish_librdkafka, total_events, wait_for_all

pytestmark = pytest.mark.integration


def delete_topic(bootstrap: str, topic: str) -> None:
    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            while topic in set(await admin.list_topics()):
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    asyncio.run(delete())


def add_partitions(bootstrap: str, topics: list[str], total: int) -> None:
    async def add() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({t: NewPartitions(total) for t in topics})
        finally:
            await admin.close()

    asyncio.run(add())


def reset(bootstrap: str, topic: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "adoptstream", "reset", "--broker", f"kafka://{bootstrap}"]
    command += ["--topic", topic, "--app-id", topic, "--data-dir", str(data_dir), "--yes"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def held(worker: WorkerProcess) -> list[dict]:
    status, body = worker.get("/ready")
    return json.loads(body)["held_partitions"] if status == 503 else []


def held_for(worker: WorkerProcess, kind: str, stage: str) -> list[dict]:
    """Poll until some partition of `stage` is held for `kind`; those partitions."""
    return poll_until(
        lambda: [h for h in held(worker) if h["kind"] == kind and h["stage"] == stage],
        60,
        f"a {stage} partition held for {kind}",
    )


def test_recreated_input_topic_is_detected_then_reset(kafka_broker, unique_topic, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap
    before, after = build_dataset(n_users=600, seed=61), build_dataset(n_users=300, seed=67)
    config = WorkerConfig(topic=unique_topic, app_id=unique_topic)

    def worker() -> WorkerProcess:
        return WorkerProcess(
            bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=["--partitions", "4"]
        )

    w = worker()
    with stopping([w.start()]):
        w.wait_ready()
        publish_librdkafka(bootstrap, unique_topic, before)
        wait_for_all([w], len(before))
        assert w.stop() == 0
    delete_topic(bootstrap, unique_topic)  # while the worker is down: offsets start again at 0
    create_topic(bootstrap, unique_topic, 4)
    publish_ns = time.time_ns()
    publish_librdkafka(bootstrap, unique_topic, after)
    w = worker()
    with stopping([w.start()]):
        w.wait_serving()
        stuck = held_for(w, "topic", "state")
        assert "recreated" in stuck[0]["reason"] and "adoptstream reset" in stuck[0]["reason"], stuck
        # the new events are not taken for replays: they are not counted at all while it is held
        assert total_events([w.samples()]) <= len(before)
        assert metric_sum(w.samples(), "adoptstream_batch_errors_total", kind="topic") > 0
        refused = reset(bootstrap, unique_topic, tmp_path / "w")
        assert refused.returncode == 1 and "stop every worker" in refused.stderr, refused.stderr
        assert w.stop() == 0
    done = reset(bootstrap, unique_topic, tmp_path / "w")
    assert done.returncode == 0 and "changelog" in done.stdout, done.stderr
    w = worker()
    with stopping([w.start()]):
        w.wait_ready()
        wait_for_all([w], len(after))
        assert_exact([w], after, publish_ns)
    assert config.changelog_topic in done.stdout


def test_input_topic_recreated_while_running_holds_the_ingest(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    msgs = build_dataset(n_users=300, seed=71)
    create_topic(bootstrap, unique_topic, 2)
    w = WorkerProcess(bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic)
    with stopping([w.start()]):
        w.wait_ready()
        publish_librdkafka(bootstrap, unique_topic, msgs)
        wait_for_all([w], len(msgs))
        delete_topic(bootstrap, unique_topic)
        create_topic(bootstrap, unique_topic, 2)
        publish_librdkafka(bootstrap, unique_topic, msgs[:50])
        stuck = held_for(w, "topic", "ingest")
        assert all(h["topic"] == unique_topic for h in stuck), stuck
        assert "recreated" in stuck[0]["reason"]
        assert total_events([w.samples()]) == len(msgs)  # nothing of the new topic counted as replays


def test_more_by_user_partitions_are_refused(kafka_broker, unique_topic, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap
    msgs = build_dataset(n_users=300, seed=73)
    config = WorkerConfig(topic=unique_topic, app_id=unique_topic)
    flags = ["--partitions", "4"]
    w = WorkerProcess(bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=flags)
    with stopping([w.start()]):
        w.wait_ready()
        publish_librdkafka(bootstrap, unique_topic, msgs)
        wait_for_all([w], len(msgs))
        assert w.stop() == 0
    add_partitions(bootstrap, [config.repartition_topic], 6)
    refused = WorkerProcess(bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=flags).start()
    assert refused.proc is not None and refused.proc.wait(timeout=60) == 2  # a clear error at start
    assert "they must match" in refused.log_tail() and "adoptstream reset" in refused.log_tail()
    add_partitions(bootstrap, [config.changelog_topic], 6)  # both grown: the state knows it had 4
    w = WorkerProcess(bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=flags)
    with stopping([w.start()]):
        w.wait_serving()
        stuck = held_for(w, "topic", "state")
        assert "split" in stuck[0]["reason"], stuck
        assert total_events([w.samples()]) <= len(msgs)


def test_recreated_changelog_is_not_wiped_silently(kafka_broker, unique_topic, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap
    msgs = build_dataset(n_users=300, seed=79)
    config = WorkerConfig(topic=unique_topic, app_id=unique_topic)
    create_topic(bootstrap, unique_topic, 2)
    w = WorkerProcess(bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic)
    with stopping([w.start()]):
        w.wait_ready()
        publish_ns = time.time_ns()
        publish_librdkafka(bootstrap, unique_topic, msgs)
        wait_for_all([w], len(msgs))
        assert w.stop() == 0
    delete_topic(bootstrap, config.changelog_topic)  # the worker creates it again at start
    w = WorkerProcess(bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic)
    with stopping([w.start()]):
        w.wait_serving()
        stuck = held_for(w, "topic", "state")
        assert "changelog" in stuck[0]["reason"] and "recreated" in stuck[0]["reason"], stuck
        assert any((tmp_path / "w" / unique_topic / "state").iterdir())  # the local state is still there
        assert w.stop() == 0
    # reset from another host: this worker's data dir keeps its store of before, and the worker
    # discards it by itself (its groups are gone: the app was reset)
    assert reset(bootstrap, unique_topic, tmp_path / "elsewhere").returncode == 0
    w = WorkerProcess(bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic)
    with stopping([w.start()]):
        w.wait_ready()
        wait_for_all([w], len(msgs))
        assert_exact([w], msgs, publish_ns)
        assert "the app was reset" in w.log_tail(200)
