"""A hot user through a real broker: far more ids than one Kafka message holds, exact after SIGKILL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from adoptstream_dev.testing import WorkerProcess
from tests.integration.dataset import Message
from tests.integration.test_exactness import publish_librdkafka, wait_for_all

pytestmark = pytest.mark.integration

USER = "用户😀" * 85 + "x"  # 256 characters, 767 bytes of UTF-8
N = 100_000  # ~52 MB of event ids: 50 times what one changelog record may hold


def events(ids: range, ts_ms: int) -> list[Message]:
    return [
        Message(
            None,
            json.dumps(
                {
                    "event_id": f"{i:08d}-" + "é" * 119,  # 128 characters
                    "user_id": USER,
                    "type": "use",
                    "feature": "f",
                    "ts": ts_ms,
                    "duration_ms": i % 5_000,
                },
                ensure_ascii=False,
            ).encode(),
        )
        for i in ids
    ]


def outcomes(worker: WorkerProcess) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in worker.samples().items()
        if name == "adoptstream_events_total" and value
    }


def test_a_hot_user_with_long_ids_stays_exact_through_sigkill_and_restore(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    ts_ms = time.time_ns() // 1_000_000 - 3_600_000
    first = events(range(N), ts_ms) + events(range(0, N, 10), ts_ms)  # every 10th twice
    w = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "a", app_id=unique_topic).start()
    try:
        w.wait_ready()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, first)
        wait_for_all([w], len(first), timeout_s=120)
        assert outcomes(w) == {"accepted": N, "duplicate": N // 10}
    finally:
        w.kill()
    # a replacement on an empty disk restores the user state and its dedup shards from the changelog
    second = events(range(5, N, 10), ts_ms) + events(range(N, N + 1_000), ts_ms)
    r = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "b", app_id=unique_topic).start()
    try:
        r.wait_ready(timeout_s=90)
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, second)
        wait_for_all([r], len(first) + len(second), timeout_s=90)
        assert outcomes(r) == {"accepted": N + 1_000, "duplicate": N // 10 + N // 10}
        samples = r.samples()
        count = samples[("adoptstream_task_duration_seconds_count", (("feature", "f"),))]
        assert count == N + 1_000
    finally:
        r.stop()
