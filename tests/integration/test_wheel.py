"""The product as users install it: a wheel in a fresh venv, no repository around it, runs a worker."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from adoptstream_dev.testing import WorkerProcess, parse_samples

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=480, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin/` of a fresh venv with only the adoptstream wheel (and its dependencies) installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(REPO)], tmp)
    (wheel,) = (tmp / "dist").glob("adoptstream-*.whl")
    run([sys.executable, "-m", "venv", str(tmp / "venv")], tmp)
    run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp)
    return tmp / "venv" / "bin"


def test_wheel_holds_the_product_only(installed: Path) -> None:
    (wheel,) = (installed.parent.parent / "dist").glob("adoptstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "adoptstream/runtime/worker.py" in names and "adoptstream/publish.py" in names
    assert not [n for n in names if "adoptstream_dev" in n or n.endswith(("localkafka.py", "demo.py"))]
    out = run([str(installed / "adoptstream"), "--help"], installed)
    assert {"worker", "publish", "rules"} <= set(out.split()) and "demo" not in out.split()


def test_wheel_brings_every_kafka_codec(installed: Path) -> None:
    """aiokafka reads lz4, snappy and zstd only with cramjam, which its extras (our dependency) bring:
    without them a worker dies on the first batch a librdkafka producer compressed (issue 16)."""
    probe = "import aiokafka.codec as c; print(c.has_gzip(), c.has_snappy(), c.has_lz4(), c.has_zstd())"
    assert run([str(installed / "python"), "-c", probe], installed).split() == ["True"] * 4


def test_installed_worker_counts_events(
    installed: Path, kafka_broker, unique_topic: str, tmp_path: Path
) -> None:
    """The venv's own `python -m adoptstream worker`, started outside the checkout, counts what it reads."""
    worker = WorkerProcess(
        kafka_broker.bootstrap,
        unique_topic,
        tmp_path / "data",
        app_id=unique_topic,
        python=str(installed / "python"),
        cwd=tmp_path,
    ).start()
    try:
        worker.wait_ready()
        producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
        now_ms = int(time.time() * 1000)
        for i in range(20):
            event = {
                "event_id": f"e{i}",
                "user_id": f"u{i % 4}",
                "type": "use",
                "feature": "search",
                "ts": now_ms,
            }
            producer.produce(unique_topic, orjson.dumps(event), key=f"u{i % 4}".encode())
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while True:
            worker.assert_alive()
            samples = parse_samples(worker.get("/metrics")[1])
            if samples.get(("adoptstream_events_total", (("outcome", "accepted"),))) == 20:
                break
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        assert samples[("adoptstream_active_users", (("feature", "search"), ("window", "1d")))] == 4
    finally:
        worker.stop()
