"""Shared fixtures: one real local Kafka broker per test session, and unique topic names."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from adoptstream_dev.localkafka import LocalKafka
from adoptstream_dev.testing import free_port


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Kafka broker (KRaft, 127.0.0.1, free ports) for the whole session; `.bootstrap` to connect."""
    broker = LocalKafka(free_port(), tmp_path_factory.mktemp("kafka"), die_with_parent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses: `t-<test name>-<random>`, only [a-z0-9-]."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"
