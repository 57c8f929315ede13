"""End-to-end fixtures: a real `adoptstream worker` process and the Prometheus/Alertmanager stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adoptstream.monitoring_stack import binaries_missing, free_port

MISSING = binaries_missing()
needs_monitoring = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed: `make system-deps` (as root) installs Debian's packages",
)


@dataclass
class Worker:
    """One `python -m adoptstream worker` on a free loopback port."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.target}/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    """Starts workers (``start_worker(bootstrap, topic)``); stops them after the test."""
    started: list[Worker] = []

    def start(bootstrap: str, topic: str, app_id: str) -> Worker:
        port = free_port()
        data_dir = tmp_path / f"worker-{port}"
        data_dir.mkdir()
        log_path = data_dir / "worker.log"
        cmd = [
            sys.executable, "-m", "adoptstream", "worker",
            "--broker", f"kafka://{bootstrap}",
            "--topic", topic,
            "--web-host", "127.0.0.1",
            "--web-port", str(port),
            "--data-dir", str(data_dir),
            "--app-id", app_id,
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env={**os.environ}
            )
        worker = Worker(proc, port, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
