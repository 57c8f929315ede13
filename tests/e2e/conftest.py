"""End-to-end fixtures: real `adoptstream worker` processes, the Prometheus/Alertmanager stack, and the
live stack (worker + generator + Prometheus) that the dashboard and report tests share."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adoptstream_dev.monitoring_stack import binaries_missing
from adoptstream_dev.testing import WorkerProcess
from tests.e2e.live import LiveStack

MISSING = binaries_missing()
needs_monitoring = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed: `make system-deps` (as root) installs Debian's packages",
)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    """Starts workers (``start_worker(bootstrap, topic)``); stops them after the test."""
    started: list[WorkerProcess] = []

    def start(bootstrap: str, topic: str, app_id: str) -> WorkerProcess:
        worker = WorkerProcess(bootstrap, topic, tmp_path / f"worker-{len(started)}", app_id=app_id)
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def live_stack(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """One worker fed by the generator and the stall scenario, scraped by Prometheus with the project's
    rules and three rollout plans (tests/e2e/live.py), shared by the dashboard and report tests."""
    if MISSING:
        pytest.skip(f"{', '.join(MISSING)} not installed: `make system-deps` installs Debian's packages")
    stack = LiveStack(tmp_path_factory.mktemp("live"), kafka_broker.bootstrap, f"live-{uuid.uuid4().hex[:8]}")
    began = time.monotonic()
    stack.start()
    print(f"\nlive stack ready in {time.monotonic() - began:.0f} s: {stack.prometheus_url}")
    try:
        yield stack
    finally:
        stack.stop()
