"""Faults, each ending exact: the broker stopped mid-stream and down at start, the network cut past the
session timeout, ten SIGKILLs in one run, the data dir full. Every contract series is compared with the
pure core's count of the same messages."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adoptstream.runtime.config import WorkerConfig
from adoptstream_dev.localkafka import HOST, LocalKafka
from adoptstream_dev.testing import (
    TcpProxy,
    WorkerProcess,
    create_topic,
    free_port,
    group_members,
    metric_sum,
    poll_until,
    stopping,
)
from tests.integration.dataset import Message, build_dataset
from tests.integration.test_exactness import assert_exact, publish_librdkafka, total_events, wait_for_all

pytestmark = pytest.mark.integration

SESSION_MS = 3000
# short sessions (the fault broker allows them) so that a lost member is noticed quickly
FAST = ["--session-timeout-ms", str(SESSION_MS), "--heartbeat-interval-ms", "500"]


@pytest.fixture(scope="module")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, TcpProxy]]:
    """A broker of the faults' own (they stop it), with a second listener behind a proxy they cut."""
    port, controller, inner = free_port(), free_port(), free_port()
    proxy = TcpProxy(inner).start()
    extra = {
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller},PROXIED://{HOST}:{inner}",
        # clients that bootstrap through the proxy are told to stay on it
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port},PROXIED://{HOST}:{proxy.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT",
        "group.min.session.timeout.ms": "1000",
    }
    broker = LocalKafka(
        port, tmp_path_factory.mktemp("fault-kafka"), controller, extra_config=extra, die_with_parent=True
    )
    broker.start()
    try:
        yield broker, proxy
    finally:
        broker.stop()
        proxy.stop()


def publish_paced(bootstrap: str, topic: str, msgs: list[Message], chunk: int = 300) -> threading.Thread:
    """Publish in chunks from another thread, so that faults land while input is still arriving."""
    chunks = [msgs[i : i + chunk] for i in range(0, len(msgs), chunk)]
    thread = threading.Thread(target=lambda: [publish_librdkafka(bootstrap, topic, c) for c in chunks])
    thread.start()
    return thread


def test_broker_stops_mid_stream_and_comes_back_on_the_same_data(
    fault_broker, unique_topic, tmp_path: Path
) -> None:
    broker, _ = fault_broker
    msgs = build_dataset(n_users=2000, seed=31)
    create_topic(broker.bootstrap, unique_topic, 4)
    w = WorkerProcess(broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=FAST)
    with stopping([w.start()]):
        w.wait_ready()
        publish_ns = time.time_ns()
        publisher = publish_paced(broker.bootstrap, unique_topic, msgs)
        poll_until(lambda: total_events([w.samples()]) >= len(msgs) * 0.2, 60, "a fifth processed")
        broker.stop()  # mid-stream: the publisher keeps trying, the worker loses its broker
        try:
            assert w.get("/healthz")[0] == 200
            w.assert_alive()
            assert total_events([w.samples()]) < len(msgs)
        finally:
            broker.start()  # the same data dir: the same topics, offsets and groups
        publisher.join(timeout=120)
        wait_for_all([w], len(msgs), timeout_s=180)
        assert_exact([w], msgs, publish_ns)
        w.wait_ready(timeout_s=60)


def test_broker_down_when_the_worker_starts(fault_broker, unique_topic, tmp_path: Path) -> None:
    broker, _ = fault_broker
    msgs = build_dataset(n_users=800, seed=37)
    broker.stop()
    w = WorkerProcess(broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=FAST)
    with stopping([w.start()]):
        try:
            w.wait_serving()  # it waits for the broker: alive, healthy, not ready
            for _ in range(3):
                assert w.get("/healthz")[0] == 200
                assert w.get("/ready")[0] == 503
                w.assert_alive()
        finally:
            broker.start()
        w.wait_ready(timeout_s=60)  # it found the broker and created its topics
        publish_ns = time.time_ns()
        publish_librdkafka(broker.bootstrap, unique_topic, msgs)
        wait_for_all([w], len(msgs))
        assert_exact([w], msgs, publish_ns)


def test_network_cut_past_the_session_timeout(fault_broker, unique_topic, tmp_path: Path) -> None:
    broker, proxy = fault_broker
    msgs = build_dataset(n_users=1500, seed=43)
    half = len(msgs) // 2
    create_topic(broker.bootstrap, unique_topic, 4)
    through_proxy = f"{HOST}:{proxy.port}"
    w = WorkerProcess(through_proxy, unique_topic, tmp_path / "w", app_id=unique_topic, extra=FAST)
    group = WorkerConfig(topic=unique_topic, app_id=unique_topic).state_group
    with stopping([w.start()]):
        w.wait_ready()
        publish_ns = time.time_ns()
        publish_librdkafka(broker.bootstrap, unique_topic, msgs[:half])
        wait_for_all([w], half)
        rebalances = metric_sum(w.samples(), "adoptstream_rebalances_total")
        proxy.cut()
        try:
            publish_librdkafka(broker.bootstrap, unique_topic, msgs[half:])  # the broker itself is fine
            # the broker gives up on the worker: its session expired and the group is empty
            poll_until(lambda: group_members(broker.bootstrap, group) == 0, 30, "the session expired")
            assert w.get("/healthz")[0] == 200
            assert total_events([w.samples()]) == half
        finally:
            proxy.restore()
        wait_for_all([w], len(msgs), timeout_s=180)
        assert_exact([w], msgs, publish_ns)
        assert metric_sum(w.samples(), "adoptstream_rebalances_total") > rebalances  # it joined again


def test_ten_sigkills_at_random_moments_in_one_run(kafka_broker, unique_topic, tmp_path: Path) -> None:
    rng = random.Random(47)
    msgs = build_dataset(n_users=3000, seed=47)
    create_topic(kafka_broker.bootstrap, unique_topic, 4)
    flags = ["--instance-id", "killed-0"]  # static membership: each replacement takes over at once

    def worker() -> WorkerProcess:
        return WorkerProcess(
            kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=flags
        )

    publish_ns = time.time_ns()
    publisher = publish_paced(kafka_broker.bootstrap, unique_topic, msgs, chunk=200)
    seen = []
    for _ in range(10):
        w = worker().start()
        w.wait_serving()
        time.sleep(rng.uniform(0.0, 3.0))  # the fault's moment: connecting, restoring, or mid-batch
        with contextlib.suppress(OSError, AssertionError):
            seen.append(total_events([w.samples(timeout=1)]))
        w.kill()
    publisher.join(timeout=120)
    final = worker().start()
    with stopping([final]):
        final.wait_ready()
        wait_for_all([final], len(msgs), timeout_s=180)
        assert_exact([final], msgs, publish_ns)
    print(f"outcomes seen before each kill: {seen}")
    assert any(0 < n < len(msgs) for n in seen), seen  # some kills landed mid-stream


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs (as root), else a plain directory: the data dir the next test fills up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None
    if mounted:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], capture_output=True
        )
        mounted = result.returncode == 0
    try:
        yield disk
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def fill_up(disk: Path) -> Path:
    """Make `disk` unwritable: fill it when it is a small file system, else take away its permissions."""
    filler = disk / "filler"
    if os.path.ismount(disk):
        with open(filler, "wb") as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
    else:
        for path in [disk, *disk.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
    return filler


def free_up(disk: Path, filler: Path) -> None:
    if filler.exists():
        filler.unlink()
    for path in [disk, *disk.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


def test_data_dir_full_then_writable_again(
    kafka_broker, unique_topic, tmp_path: Path, small_disk: Path
) -> None:
    if not os.path.ismount(small_disk) and os.geteuid() == 0:
        pytest.skip("root ignores permissions, and no tmpfs could be mounted here")
    msgs = build_dataset(n_users=2000, seed=53)
    half = len(msgs) // 2
    create_topic(kafka_broker.bootstrap, unique_topic, 4)
    # its state on the small disk, its log next to it
    state = ["--data-dir", str(small_disk / "data")]
    w = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=state)
    with stopping([w.start()]):
        w.wait_ready()
        publish_ns = time.time_ns()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[:half])
        wait_for_all([w], half)
        filler = fill_up(small_disk)
        try:
            publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[half:])
            # the stores' next flush fails: reported, not ready, and the worker keeps serving
            poll_until(lambda: w.get("/ready")[0] == 503, 60, "not ready on a full disk")
            samples = w.samples()
            assert metric_sum(samples, "adoptstream_batch_errors_total", stage="state", kind="storage") > 0
            assert metric_sum(samples, "adoptstream_stuck_partitions") > 0
            assert w.get("/healthz")[0] == 200
            reasons = [h["reason"] for h in json.loads(w.get("/ready")[1])["held_partitions"]]
            assert any("No space left on device" in r or "Permission denied" in r for r in reasons), reasons
        finally:
            free_up(small_disk, filler)
        w.wait_ready(timeout_s=90)
        wait_for_all([w], len(msgs), timeout_s=120)
        assert_exact([w], msgs, publish_ns)
