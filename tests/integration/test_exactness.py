"""Exact contract numbers through a real broker: foreign producer, several workers, SIGKILL + restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from adoptstream_dev.testing import Samples, WorkerProcess, contract_only, summed
from tests.integration.dataset import Message, build_dataset, expected_model_samples

pytestmark = pytest.mark.integration


def publish_librdkafka(
    bootstrap: str, topic: str, msgs: list[Message], config: dict[str, str] | None = None
) -> None:
    """Publish with librdkafka (CRC32 'consistent_random' partitioner), keys as given (null/foreign).

    `config`: more producer settings (e.g. compression.type)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, **(config or {})}
    )
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    for m in msgs:
        while True:
            try:
                producer.produce(topic, value=m.value, key=m.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors[:3]


def total_events(pages: list[Samples]) -> float:
    return sum(v for page in pages for (name, _), v in page.items() if name == "adoptstream_events_total")


def wait_for_all(workers: list[WorkerProcess], n_messages: int, timeout_s: float = 120.0) -> list[Samples]:
    """Poll until the workers together gave every message an outcome."""
    deadline = time.monotonic() + timeout_s
    seen = -1.0
    while time.monotonic() < deadline:
        for w in workers:
            w.assert_alive()
        pages = [w.samples() for w in workers]
        seen = total_events(pages)
        assert seen <= n_messages, f"more outcomes ({seen}) than messages ({n_messages})"
        if seen == n_messages:
            return pages
        time.sleep(0.2)
    logs = "\n".join(w.log_tail() for w in workers)
    raise TimeoutError(f"{seen} of {n_messages} messages processed after {timeout_s}s\n{logs}")


def assert_exact(workers: list[WorkerProcess], msgs: list[Message], publish_ns: int) -> None:
    for _ in range(3):  # an hour boundary between scrape and expectation: try again
        before = time.time_ns()
        got = summed([contract_only(w.samples()) for w in workers])
        after = time.time_ns()
        if before // 3_600_000_000_000 == after // 3_600_000_000_000:
            break
    want = expected_model_samples(msgs, publish_ns, after)
    missing = sorted(set(want) - set(got))
    extra = sorted(k for k in set(got) - set(want) if got[k] != 0)
    wrong = sorted((k, got[k], want[k]) for k in set(got) & set(want) if got[k] != pytest.approx(want[k]))
    assert not missing and not extra and not wrong, (
        f"missing {missing[:5]}\nextra {extra[:5]}\nwrong (key, got, want) {wrong[:5]}"
    )


def test_two_workers_rebalance_mid_stream_foreign_producer(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    msgs = build_dataset(n_users=1500, seed=7)
    a = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "a", app_id=unique_topic).start()
    b = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "b", app_id=unique_topic)
    try:
        a.wait_ready()
        publish_ns = time.time_ns()
        half = len(msgs) // 2
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[:half])
        b.start()  # joins while a is busy: both groups rebalance mid-stream
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[half:])
        b.wait_ready()
        wait_for_all([a, b], len(msgs))
        assert_exact([a, b], msgs, publish_ns)
        # both workers really own state: each exports part of the users
        assert total_events([a.samples()]) > 0 and total_events([b.samples()]) > 0
        for w in (a, b):  # the name[] filter (what the benches poll) serves the same samples
            for name in ("adoptstream_events_total", "adoptstream_active_users"):
                full = {k: v for k, v in w.samples().items() if k[0] == name}
                assert w.samples(f"?name[]={name}") == full, name
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_sigkill_mid_stream_then_restart_is_exact(
    kafka_broker, unique_topic, tmp_path: Path, store: str
) -> None:
    msgs = build_dataset(n_users=2500, seed=11)
    w = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, store=store)
    w.start().wait_ready()
    publish_ns = time.time_ns()
    # publish in a paced stream from another thread, so the kill lands while input is still arriving
    chunks = [msgs[i : i + 500] for i in range(0, len(msgs), 500)]
    publisher = threading.Thread(
        target=lambda: [publish_librdkafka(kafka_broker.bootstrap, unique_topic, c) for c in chunks]
    )
    publisher.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and total_events([w.samples()]) < len(msgs) * 0.2:
            time.sleep(0.02)
        processed = total_events([w.samples()])
        w.kill()
        assert 0 < processed < len(msgs), f"killed after {processed} of {len(msgs)}: not mid-stream"
        publisher.join(timeout=120)
        restarted = WorkerProcess(
            kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, store=store
        ).start()
        try:
            restarted.wait_ready(timeout_s=90)
            wait_for_all([restarted], len(msgs))
            assert_exact([restarted], msgs, publish_ns)
        finally:
            restarted.stop()
    finally:
        w.kill()


def test_dead_letters_byte_for_byte(kafka_broker, unique_topic, tmp_path: Path) -> None:
    from confluent_kafka import Consumer

    bad = [Message(b"k1", b"not json"), Message(None, b'{"ts":1}'), Message(b"\x00bin", b"\xff\xfe")]
    w = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic).start()
    try:
        w.wait_ready()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, bad)
        wait_for_all([w], len(bad))
        consumer = Consumer(
            {
                "bootstrap.servers": kafka_broker.bootstrap,
                "group.id": f"{unique_topic}-check",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([f"{unique_topic}.dlq"])
        got: list[tuple[bytes | None, bytes | None, dict]] = []
        deadline = time.monotonic() + 30
        while len(got) < len(bad) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append((m.key(), m.value(), dict(m.headers() or [])))
        consumer.close()
        assert sorted((k or b"", v) for k, v, _ in got) == sorted((m.key or b"", m.value) for m in bad)
        for _, _, headers in got:
            assert headers["adoptstream-outcome"] == b"invalid"
            assert headers["adoptstream-reason"].startswith(b"invalid: ")
    finally:
        w.stop()


def test_replacement_with_the_same_instance_id_takes_over_before_the_session_timeout(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    """Static membership: a SIGKILLed worker's replacement (same instance id, same data dir) is exact
    again long before the dead member's session would have expired (45 s here). Without the instance
    id both groups would wait out those 45 s before handing over any partition."""
    session_s, within_s = 45, 25
    msgs = build_dataset(n_users=1500, seed=13)
    half = len(msgs) // 2
    flags = ["--instance-id", "adoptstream-0", "--session-timeout-ms", str(session_s * 1000)]

    def worker() -> WorkerProcess:
        return WorkerProcess(
            kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic, extra=flags
        )

    w = worker().start()
    try:
        w.wait_ready()
        publish_ns = time.time_ns()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[:half])
        wait_for_all([w], half)
        assert_exact([w], msgs[:half], publish_ns)
        w.kill()
        killed = time.monotonic()
        # input arriving after the kill: exact again needs both groups (ingest and state) handed over
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[half:])
        replacement = worker().start()
        try:
            replacement.wait_ready(timeout_s=killed + within_s - time.monotonic())
            wait_for_all([replacement], len(msgs), timeout_s=killed + within_s - time.monotonic())
            took = time.monotonic() - killed
            assert_exact([replacement], msgs, publish_ns)
            assert took < within_s < session_s
            print(f"replacement exact {took:.1f} s after the kill (session timeout {session_s} s)")
        finally:
            replacement.stop()
    finally:
        w.kill()


def test_restart_on_the_same_disk_starts_from_the_totals_snapshot(
    kafka_broker, unique_topic, tmp_path: Path
) -> None:
    """A stopped worker leaves each partition's totals in its store. Its successor on the same disk
    takes them and brings them along the changelog tail (written meanwhile by another worker that
    owned the partitions) instead of deriving them from every state: exact again."""
    msgs = build_dataset(n_users=1500, seed=17)
    third = len(msgs) // 3

    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / name, app_id=unique_topic)

    w = worker("w").start()
    try:
        w.wait_ready()
        publish_ns = time.time_ns()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[:third])
        wait_for_all([w], third)
    finally:
        assert w.stop() == 0, w.log_tail()
    other = worker("other").start()
    try:
        other.wait_ready()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[third : 2 * third])
        wait_for_all([other], 2 * third)
    finally:
        assert other.stop() == 0, other.log_tail()
    successor = worker("w").start()
    try:
        successor.wait_ready()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[2 * third :])
        wait_for_all([successor], len(msgs))
        assert_exact([successor], msgs, publish_ns)
        log = successor.log_path.read_text() if successor.log_path else ""
        assert "totals from its snapshot" in log and "restored changelog offsets" in log, log
    finally:
        successor.stop()
