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


LIVE_STACK = "live_stack"
_running: list[LiveStack] = []  # the live stack while its tests run


@pytest.fixture(scope="session")
def live_stack(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """One worker fed by the generator and the stall scenario, scraped by Prometheus with the project's
    rules and three rollout plans (tests/e2e/live.py), shared by the dashboard and report tests. Those
    tests run one after the other and the stack stops after the last of them (hooks below): left running,
    its traffic, workers and Prometheus take half of a 2-core box from the rest of the suite."""
    if MISSING:
        pytest.skip(f"{', '.join(MISSING)} not installed: `make system-deps` installs Debian's packages")
    stack = LiveStack(tmp_path_factory.mktemp("live"), kafka_broker.bootstrap, f"live-{uuid.uuid4().hex[:8]}")
    began = time.monotonic()
    stack.start()
    print(f"\nlive stack ready in {time.monotonic() - began:.0f} s: {stack.prometheus_url}")
    _running.append(stack)
    try:
        yield stack
    finally:
        _stop_live_stack()


def _stop_live_stack() -> None:
    while _running:
        _running.pop().stop()


def _uses_live_stack(item: pytest.Item | None) -> bool:
    return item is not None and LIVE_STACK in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after pytest has grouped the items by their fixtures
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of the live stack next to the first of them, in their order."""
    live = [item for item in items if _uses_live_stack(item)]
    if not live:
        return
    at = items.index(live[0])
    others = [item for item in items if not _uses_live_stack(item)]
    items[:] = others[:at] + live + others[at:]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _uses_live_stack(item) and not _uses_live_stack(nextitem):
        _stop_live_stack()
