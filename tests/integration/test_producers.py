"""Every producer's messages: all four codecs from two clients, transactions, tombstones, any headers.

librdkafka (confluent-kafka, CRC32 partitioner) and kafka-python (the Java client's murmur2 partitioner,
its own lz4/snappy/zstd encoders) compress with each Kafka codec; a transactional producer aborts
transactions between committed ones. Each ends exact: every contract series equals the pure core's
numbers for exactly the committed messages.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaProducer

from adoptstream_dev.testing import WorkerProcess, metric_sum
from tests.integration.dataset import Message, build_dataset
from tests.integration.test_exactness import assert_exact, publish_librdkafka, wait_for_all

pytestmark = pytest.mark.integration

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def publish_kafka_python(bootstrap: str, topic: str, msgs: list[Message], codec: str) -> None:
    """Publish with kafka-python: murmur2 on the key like the Java client, compressed with `codec`."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, compression_type=codec, acks="all", linger_ms=5, max_request_size=2**21
    )
    try:
        futures = [producer.send(topic, value=m.value, key=m.key) for m in msgs]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)  # raises what the broker refused
    finally:
        producer.close(timeout=10)


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_from_librdkafka_and_a_java_partitioner_client(
    kafka_broker, unique_topic: str, tmp_path: Path, codec: str
) -> None:
    dataset = build_dataset(n_users=500, seed=31)
    # kafka-python sends no message without key and value: librdkafka sends those
    keyless_nulls = [m for m in dataset if m.key is None and m.value is None]
    rest = [m for m in dataset if m.key is not None or m.value is not None]
    msgs = keyless_nulls + rest
    half = len(msgs) // 2
    worker = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic).start()
    try:
        worker.wait_ready()
        publish_ns = time.time_ns()
        publish_librdkafka(kafka_broker.bootstrap, unique_topic, msgs[:half], {"compression.type": codec})
        wait_for_all([worker], half)
        assert_exact([worker], msgs[:half], publish_ns)
        publish_kafka_python(kafka_broker.bootstrap, unique_topic, msgs[half:], codec)
        wait_for_all([worker], len(msgs))
        assert_exact([worker], msgs, publish_ns)
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_aborted_transactions_never_count_committed_ones_once(
    kafka_broker, unique_topic: str, tmp_path: Path
) -> None:
    msgs = build_dataset(n_users=600, seed=37)
    committed = [msgs[i : i + len(msgs) // 3 + 1] for i in range(0, len(msgs), len(msgs) // 3 + 1)]
    # what an aborted transaction would have added: uses of a feature no committed message mentions,
    # by users who also appear in committed messages, and a signup of a user who appears nowhere else
    aborted = [
        Message(
            f"user-{u}".encode(),
            (
                f'{{"event_id":"aborted-{n}-{u}","user_id":"user-{u}","type":"use",'
                f'"feature":"aborted-feature","ts":{int(time.time() * 1000)}}}'
            ).encode(),
        )
        for n in range(2)
        for u in range(300)
    ]
    aborted.append(Message(None, b'{"event_id":"a","user_id":"ghost","type":"signup","ts":1}'))
    worker = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic).start()
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "transactional.id": f"{unique_topic}-tx",
            "linger.ms": 5,
            "compression.type": "zstd",
        }
    )
    try:
        worker.wait_ready()
        publish_ns = time.time_ns()
        producer.init_transactions(30)
        for i, chunk in enumerate(committed):
            producer.begin_transaction()
            for m in chunk:
                producer.produce(unique_topic, value=m.value, key=m.key)
            producer.commit_transaction(30)
            if i < len(committed) - 1:  # an aborted transaction between every two committed ones
                producer.begin_transaction()
                for m in aborted:
                    producer.produce(unique_topic, value=m.value, key=m.key)
                producer.flush(30)  # the aborted records really are in the log before the abort marker
                producer.abort_transaction(30)
        pages = wait_for_all([worker], len(msgs))  # never more outcomes than committed messages
        assert_exact([worker], msgs, publish_ns)
        assert metric_sum(pages[0], "adoptstream_feature_uses_total", feature="aborted-feature") == 0
    finally:
        assert worker.stop() == 0, worker.log_tail()


# headers of every shape: none, duplicate names, binary and empty values, a null value
ODD_HEADERS = [("trace", b"1"), ("trace", b"2"), ("bin", b"\x00\xff\xfe\x80"), ("empty", b""), ("null", None)]


def test_tombstones_empty_values_and_any_headers_each_get_an_outcome(
    kafka_broker, unique_topic: str, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    valid = b'{"event_id":"e1","user_id":"u1","type":"signup","ts":%d}' % now_ms
    valid_too = b'{"event_id":"e2","user_id":"u2","type":"signup","ts":%d}' % now_ms
    future = b'{"event_id":"e3","user_id":"u3","type":"signup","ts":%d}' % (now_ms + 3_600_000)
    sent: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, str]] = [
        (b"u1", valid, None, "accepted"),
        (b"u2", valid_too, ODD_HEADERS, "accepted"),
        (b"k-tombstone", None, [("why", b"delete")], "invalid"),
        (None, None, None, "invalid"),
        (b"k-empty", b"", ODD_HEADERS, "invalid"),
        (b"k-garbage", b"\xff not json", ODD_HEADERS, "invalid"),
        (b"u3", future, ODD_HEADERS, "future"),
    ]
    worker = WorkerProcess(kafka_broker.bootstrap, unique_topic, tmp_path / "w", app_id=unique_topic).start()
    try:
        worker.wait_ready()
        producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
        for key, value, headers, _ in sent:
            producer.produce(unique_topic, value=value, key=key, headers=headers)
        assert producer.flush(30) == 0
        pages = wait_for_all([worker], len(sent))
        for outcome in ("accepted", "invalid", "future"):
            want = sum(1 for *_, o in sent if o == outcome)
            assert metric_sum(pages[0], "adoptstream_events_total", outcome=outcome) == want, outcome

        consumer = Consumer(
            {
                "bootstrap.servers": kafka_broker.bootstrap,
                "group.id": f"{unique_topic}-check",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([f"{unique_topic}.dlq"])
        dead: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = []
        deadline = time.monotonic() + 30
        rejected = [s for s in sent if s[3] != "accepted"]
        while len(dead) < len(rejected) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                dead.append((m.key(), m.value(), list(m.headers() or [])))
        consumer.close()
        by_key = {key: (value, headers) for key, value, headers in dead}
        assert len(dead) == len(rejected) == len(by_key)
        for key, value, headers, outcome in rejected:
            got_value, got_headers = by_key[key]
            assert got_value == value  # byte for byte; a tombstone stays a null value
            # the headers it came with, in order and byte for byte, then the worker's three
            assert got_headers[:-3] == list(headers or []), key
            names = [name for name, _ in got_headers[-3:]]
            assert names == ["adoptstream-reason", "adoptstream-outcome", "adoptstream-source"]
            assert dict(got_headers[-3:])["adoptstream-outcome"] == outcome.encode()
    finally:
        assert worker.stop() == 0, worker.log_tail()
