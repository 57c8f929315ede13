"""End-to-end fixtures: a real `adoptstream worker` process and the Prometheus/Alertmanager stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adoptstream_dev.monitoring_stack import binaries_missing
from adoptstream_dev.testing import WorkerProcess

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
