"""No record stops a worker: a batch it cannot decode and a restore that fails hold their partition
(reported, retried, not ready) while the others go on; once the cause is gone nothing is lost."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from adoptstream.runtime import records
from adoptstream.runtime.config import WorkerConfig
from adoptstream_dev.testing import (
    WorkerProcess,
    committed_offsets,
    create_topic,
    metric_sum,
    poll_until,
)
from tests.integration.dataset import Message, build_dataset
from tests.integration.test_exactness import assert_exact, total_events, wait_for_all

pytestmark = pytest.mark.integration

PARTITIONS = 4


def publish_to(bootstrap: str, topic: str, msgs: list[Message], partition: int, **config: str) -> list[int]:
    """Publish to one partition with librdkafka (`config`: e.g. compression.type); the offsets given."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, **config})
    offsets: list[int] = []
    errors: list[str] = []

    def delivered(err, msg) -> None:
        errors.append(str(err)) if err is not None else offsets.append(msg.offset())

    for m in msgs:
        producer.produce(topic, value=m.value, key=m.key, partition=partition, on_delivery=delivered)
    assert producer.flush(30) == 0 and not errors, errors[:3]
    return sorted(offsets)


def no_codecs(tmp_path: Path) -> dict[str, str]:
    """The environment of a worker installed without its compression codecs (aiokafka's cramjam)."""
    shadow = tmp_path / "no-codecs" / "cramjam"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("cramjam is not installed here")\n')
    return {"PYTHONPATH": str(shadow.parent)}


def ready_body(worker: WorkerProcess) -> tuple[int, dict]:
    status, body = worker.get("/ready")
    return status, json.loads(body)


def test_batch_it_cannot_decode_holds_its_partition_and_the_others_go_on(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    create_topic(bootstrap, unique_topic, PARTITIONS)
    msgs = build_dataset(n_users=600, seed=23)
    quarter = len(msgs) // 4
    plain = {p: msgs[p * quarter : (p + 1) * quarter] for p in range(PARTITIONS)}
    squeezed = msgs[PARTITIONS * quarter :]  # to partition 2, lz4-compressed, between plain ones
    before, after = plain[2][: quarter // 2], plain[2][quarter // 2 :]
    for p in (0, 1, 3):
        publish_to(bootstrap, unique_topic, plain[p], p)
    publish_to(bootstrap, unique_topic, before, 2)
    publish_ns = time.time_ns()
    bad_offset = publish_to(bootstrap, unique_topic, squeezed, 2, **{"compression.type": "lz4"})[0]
    publish_to(bootstrap, unique_topic, after, 2)
    readable = len(msgs) - len(squeezed) - len(after)

    data = tmp_path / "w"
    w = WorkerProcess(bootstrap, unique_topic, data, app_id=unique_topic, env=no_codecs(tmp_path)).start()
    try:
        w.wait_serving()
        poll_until(lambda: total_events([w.samples()]) == readable, 60, "every readable message counted")
        _, body = poll_until(lambda: (s := ready_body(w))[0] == 503 and s, 30, "/ready says why")
        held = [h for h in body["held_partitions"] if h["topic"] == unique_topic]
        assert [(h["partition"], h["stage"], h["kind"], h["offset"]) for h in held] == [
            (2, "ingest", "read", bad_offset)
        ], body
        assert "UnsupportedCodecError" in held[0]["reason"]
        samples = w.samples()
        assert metric_sum(samples, "adoptstream_stuck_partitions", topic=unique_topic) == 1
        assert metric_sum(samples, "adoptstream_batch_errors_total", stage="ingest", kind="read") >= 1
        assert samples[("adoptstream_ready", ())] == 0
        assert w.get("/healthz")[0] == 200
        offsets = committed_offsets(bootstrap, f"{unique_topic}-ingest")
        assert offsets[(unique_topic, 2)] == bad_offset  # not one record past it
        assert total_events([w.samples()]) == readable
        w.assert_alive()
    finally:
        stopped = w.stop()
    assert stopped == 0, w.log_tail()
    # the codec installed again: the same worker (same data dir) reads on from the held offset
    fixed = WorkerProcess(bootstrap, unique_topic, data, app_id=unique_topic).start()
    try:
        fixed.wait_ready()
        wait_for_all([fixed], len(msgs))
        assert_exact([fixed], msgs, publish_ns)
        assert metric_sum(fixed.samples(), "adoptstream_stuck_partitions") == 0
    finally:
        fixed.stop()


def test_failed_restore_is_retried_and_nothing_of_its_partition_counts_meanwhile(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    config = WorkerConfig(topic=unique_topic, app_id=unique_topic, data_dir=tmp_path / "w")
    create_topic(bootstrap, unique_topic, PARTITIONS)
    # by-user partition 3's store cannot be opened: a file where its directory goes
    blocked = config.state_dir / "p0003"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory\n")
    msgs = build_dataset(n_users=800, seed=29)
    by_input = {p: msgs[p::PARTITIONS] for p in range(PARTITIONS)}
    publish_ns = time.time_ns()
    w = WorkerProcess(
        bootstrap, unique_topic, config.data_dir, app_id=unique_topic, extra=["--partitions", str(PARTITIONS)]
    ).start()
    try:
        w.wait_serving()
        for p, part in by_input.items():
            publish_to(bootstrap, unique_topic, part, p)
        elsewhere = sum(1 for p, part in by_input.items() for m in part if by_user_partition(m, p) != 3)
        assert 0 < elsewhere < len(msgs)
        poll_until(lambda: total_events([w.samples()]) == elsewhere, 60, "the other partitions counted")
        status, body = ready_body(w)
        assert status == 503
        held = [(h["topic"], h["partition"], h["stage"], h["kind"]) for h in body["held_partitions"]]
        assert held == [(config.repartition_topic, 3, "state", "storage")], body
        samples = w.samples()
        assert metric_sum(samples, "adoptstream_stuck_partitions", topic=config.repartition_topic) == 1
        assert metric_sum(samples, "adoptstream_batch_errors_total", stage="state", kind="storage") >= 1
        # nothing of partition 3 applied, nor its by-user offset committed
        assert total_events([w.samples()]) == elsewhere
        assert (config.repartition_topic, 3) not in committed_offsets(bootstrap, config.state_group)
        blocked.unlink()  # the cause goes away: the next retry restores it
        w.wait_ready(timeout_s=60)
        wait_for_all([w], len(msgs))
        assert_exact([w], msgs, publish_ns)
    finally:
        w.stop()


def by_user_partition(message: Message, input_partition: int) -> int:
    """The by-user partition that counts a message's outcome (as the ingest stage routes it)."""
    from adoptstream.core.events import InvalidEvent, parse_event

    try:
        user_id = parse_event(message.value).user_id
    except InvalidEvent:
        return records.rejection_partition(input_partition, PARTITIONS)
    return records.user_partition(user_id, PARTITIONS)
