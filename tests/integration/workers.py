"""Run real `adoptstream worker` processes and read their /metrics, for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CONTRACT_PREFIXES = (
    "adoptstream_events_total",
    "adoptstream_active_users",
    "adoptstream_exposed_users",
    "adoptstream_adopted_users",
    "adoptstream_time_to_first_use_seconds",
    "adoptstream_feature_uses_total",
    "adoptstream_active_days_users",
    "adoptstream_lifecycle_users",
    "adoptstream_signed_up_users",
    "adoptstream_feedback_users",
    "adoptstream_task_duration_seconds",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def contract_only(samples: Samples) -> Samples:
    """The contract series (CONTRACT sections 2 and 3), without _created timestamps."""
    return {
        k: v
        for k, v in samples.items()
        if k[0].startswith(CONTRACT_PREFIXES) and not k[0].endswith("_created")
    }


def summed(pages: list[Samples]) -> Samples:
    """`sum without (instance, job)` over workers: add the same series of every worker."""
    total: Samples = defaultdict(float)
    for page in pages:
        for k, v in page.items():
            total[k] += v
    return dict(total)


@dataclass
class WorkerProcess:
    """One worker subprocess on a free loopback port."""

    bootstrap: str
    topic: str
    data_dir: Path
    app_id: str = "adoptstream"
    store: str = "rocksdb"
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"worker-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "adoptstream",
            "worker",
            "--broker",
            f"kafka://{self.bootstrap}",
            "--topic",
            self.topic,
            "--web-port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--app-id",
            self.app_id,
            "--store",
            self.store,
            *self.extra,
        ]
        env = {**os.environ, "ADOPTSTREAM_LOG_LEVEL": "INFO"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                if self.get("/ready", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"worker on port {self.port} not ready in {timeout_s}s:\n{self.log_tail()}")

    def samples(self, query: str = "") -> Samples:
        status, text = self.get("/metrics" + query)
        assert status == 200, text
        return parse_samples(text)

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no goodbye, no commit, no flush."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None
