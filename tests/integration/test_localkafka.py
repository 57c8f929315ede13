"""The local broker is a real Kafka: aiokafka and librdkafka round-trip through it; start/stop behave."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import NewTopic as RdNewTopic

from adoptstream_dev.localkafka import LocalKafka, LocalKafkaError, broker_answers
from adoptstream_dev.testing import create_topic_async, free_port, port_in_use

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def rd_create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([RdNewTopic(topic, num_partitions=partitions, replication_factor=1)])
    futures[topic].result(30)


def rd_produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Produce with librdkafka (idempotent), fail on any delivery error."""
    errors: list[object] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(
            topic,
            value=value,
            key=str(i).encode(),
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    assert producer.flush(30) == 0, "librdkafka did not deliver everything within 30 s"
    assert errors == []


def rd_consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-rd", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                got.append(msg.value())
    finally:
        consumer.close()
    return got


async def aio_consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"{topic}-aio", auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < count:
                batch = await consumer.getmany(timeout_ms=500)
                got.extend(m.value for msgs in batch.values() for m in msgs)
    finally:
        await consumer.stop()
    return got


def process_gone(pid: int) -> bool:
    """Dead or a zombie (reparented, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def test_broker_answers_metadata_on_loopback(kafka_broker: LocalKafka) -> None:
    assert kafka_broker.is_running()
    assert broker_answers(kafka_broker.bootstrap)
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert kafka_broker.log_path.stat().st_size > 0  # log4j works: the broker logs to its dir
    assert "Kafka Server started" in kafka_broker.log_path.read_text()


async def test_aiokafka_round_trip(kafka_broker: LocalKafka, unique_topic: str) -> None:
    await create_topic_async(kafka_broker.bootstrap, unique_topic, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        sent = [f"v{i}".encode() for i in range(50)]
        for value in sent:
            await producer.send(unique_topic, value, key=value)
        await producer.flush()
    finally:
        await producer.stop()
    assert sorted(await aio_consume(kafka_broker.bootstrap, unique_topic, len(sent))) == sorted(sent)


def test_librdkafka_round_trip(kafka_broker: LocalKafka, unique_topic: str) -> None:
    rd_create_topic(kafka_broker.bootstrap, unique_topic, partitions=3)
    sent = [f"rd{i}".encode() for i in range(100)]
    rd_produce(kafka_broker.bootstrap, unique_topic, sent)
    assert sorted(rd_consume(kafka_broker.bootstrap, unique_topic, len(sent))) == sorted(sent)


async def test_librdkafka_producer_aiokafka_consumer(kafka_broker: LocalKafka, unique_topic: str) -> None:
    await create_topic_async(kafka_broker.bootstrap, unique_topic, partitions=2)
    sent = [f"x{i}".encode() for i in range(100)]
    await asyncio.to_thread(rd_produce, kafka_broker.bootstrap, unique_topic, sent)
    assert sorted(await aio_consume(kafka_broker.bootstrap, unique_topic, len(sent))) == sorted(sent)


def test_start_twice_is_a_noop(kafka_broker: LocalKafka, caplog: pytest.LogCaptureFixture) -> None:
    pid = kafka_broker.pid()
    assert kafka_broker.start() is False
    same_dir = LocalKafka(kafka_broker.port, kafka_broker.data_dir)  # e.g. a second `kafka up`
    with caplog.at_level("INFO", logger="adoptstream_dev.localkafka"):
        assert same_dir.start(timeout_s=30) is False
    assert "already running" in caplog.text
    assert same_dir.pid() == pid and kafka_broker.is_running()
    with pytest.raises(LocalKafkaError, match="already running on"):
        LocalKafka(free_port(), kafka_broker.data_dir).start(timeout_s=30)


def test_stop_really_stops_and_restart_keeps_topics(tmp_path: Path) -> None:
    broker = LocalKafka(free_port(), tmp_path / "kafka", die_with_parent=True)
    try:
        assert broker.start() is True
        pid = broker.pid()
        assert pid is not None
        rd_create_topic(broker.bootstrap, "kept")
        assert broker.stop() is True
        assert process_gone(pid)
        assert not broker.is_running() and not broker.pid_path.exists()
        assert not port_in_use(broker.port) and not port_in_use(broker.controller_port)
        assert broker.stop() is False  # stopping a stopped broker is fine

        assert broker.start() is True  # same dir: no re-format, the topic survived
        assert broker.pid() != pid
        assert "kept" in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30).topics
    finally:
        broker.stop()
    assert not broker.is_running()


def test_cli_up_status_down_detached(tmp_path: Path) -> None:
    port, kdir = free_port(), tmp_path / "cli"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "adoptstream_dev", "kafka", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=150)

    up = cli("up", "--port", str(port), "--dir", str(kdir))
    try:
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{port}" in up.stdout and str(kdir / "broker.log") in up.stdout
        assert broker_answers(f"127.0.0.1:{port}")  # the broker outlived the CLI process
        assert "already running" in cli("up", "--port", str(port), "--dir", str(kdir)).stdout
        status = cli("status", "--dir", str(kdir))
        assert status.returncode == 0 and "answering" in status.stdout
        pid = LocalKafka.from_dir(kdir).pid()
    finally:
        down = cli("down", "--dir", str(kdir))
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
    assert pid is not None and process_gone(pid)
    assert cli("status", "--dir", str(kdir)).returncode == 3


def test_die_with_parent_leaves_no_broker_behind(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from adoptstream_dev.localkafka import LocalKafka, free_port\n"
        "broker = LocalKafka(free_port(), sys.argv[1], die_with_parent=True)\n"
        "broker.start()\n"
        "print(broker.pid(), flush=True)\n"
        "time.sleep(300)\n"
    )
    cmd = [sys.executable, "-c", code, str(tmp_path / "k")]
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not process_gone(pid)
    finally:
        parent.kill()  # SIGKILL: no finalizer runs in the parent
        parent.wait()
    deadline = time.monotonic() + 30
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_gone(pid)


def test_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LocalKafkaError, match=f"port {port} on 127.0.0.1 \\(Kafka listener\\)"):
            LocalKafka(port, tmp_path / "a").start()
        with pytest.raises(LocalKafkaError, match=f"port {port} on 127.0.0.1 \\(KRaft controller\\)"):
            LocalKafka(free_port(), tmp_path / "b", controller_port=port).start()


def test_broker_failing_at_startup_reports_its_log(tmp_path: Path) -> None:
    # formats fine, fails only when the broker instantiates its metric reporters
    broker = LocalKafka(
        free_port(),
        tmp_path / "bad",
        extra_config={"metric.reporters": "no.such.Reporter"},
        die_with_parent=True,
    )
    with pytest.raises(LocalKafkaError, match="exited during startup") as failure:
        broker.start(timeout_s=60)
    assert "no.such.Reporter" in str(failure.value)  # the log tail says what is wrong
    assert not broker.is_running() and not broker.pid_path.exists()


def test_bad_config_fails_at_format_with_the_reason(tmp_path: Path) -> None:
    broker = LocalKafka(free_port(), tmp_path / "bad", extra_config={"num.io.threads": "many"})
    with pytest.raises(LocalKafkaError, match=r"Invalid value many for configuration num\.io\.threads"):
        broker.start(timeout_s=60)


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adoptstream_dev.localkafka import fetch_kafka_libs

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match="`java` not found on PATH"):
        fetch_kafka_libs(tmp_path / "libs")
    assert os.environ["PATH"] == str(tmp_path)
