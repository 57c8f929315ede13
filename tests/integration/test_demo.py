"""`adoptstream-dev demo`: a real worker and live traffic on the fixture broker, a table, a clean stop."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from adoptstream_dev.demo import render_table
from adoptstream_dev.testing import free_port, port_in_use

MONITORING = all(shutil.which(b) for b in ("prometheus", "prometheus-alertmanager")) and all(
    importlib.util.find_spec(m) is not None
    for m in ("adoptstream_dev.monitoring_stack", "adoptstream_dev.scenario")
)
needs_monitoring = pytest.mark.skipif(
    not MONITORING, reason="prometheus/prometheus-alertmanager or adoptstream_dev.monitoring_stack missing"
)


def demo_cmd(bootstrap: str, topic: str, port: int, tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "adoptstream_dev", "demo",
        "--broker", f"kafka://{bootstrap}", "--topic", topic, "--web-port", str(port),
        "--data-dir", str(tmp_path / "demo"), "--kafka-dir", str(tmp_path / "kafka"),
        "--rate", "200", "--backfill", "3000", *extra,
    ]  # fmt: skip


def monitoring_ports(output: str) -> list[int]:
    """Ports of Prometheus and Alertmanager as the demo announced them."""
    match = re.search(r"monitoring: Prometheus http://[\d.]+:(\d+)  Alertmanager http://[\d.]+:(\d+)", output)
    return [int(p) for p in match.groups()] if match else []


def test_render_table() -> None:
    summary = {
        "events": {"accepted": 1200, "duplicate": 3, "invalid": 2, "future": 0},
        "features": {
            "*": {"active": {"1d": 5, "7d": 8, "30d": 10}, "exposed": 12, "adopted": 10, "uses": 40},
            "search": {"active": {"1d": 4, "7d": 6, "30d": 8}, "exposed": 10, "adopted": 8, "uses": 30},
            "ai/assist": {"active": {"1d": 0, "7d": 0, "30d": 0}, "exposed": 3, "adopted": 0, "uses": 0},
        },
    }
    text = render_table(summary)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["feature", "active"]
    assert lines[2].startswith("* (any feature)")
    assert re.search(r"^search\s+4\s+6\s+8\s+50\.0%\s+10\s+8\s+80\.0%\s+30$", text, re.M)
    assert re.search(r"^ai/assist\s+0\s+0\s+0\s+-\s+3\s+0\s+0\.0%\s+0$", text, re.M)
    assert "events by outcome: accepted 1,200, duplicate 3, invalid 2, future 0" in text
    assert "(no accepted events yet)" in render_table({"events": {}, "features": {}})


def last_table(output: str) -> dict[str, list[str]]:
    """Rows of the last table printed: feature -> its cells."""
    blocks = re.split(r"^feature +active 1d", output, flags=re.M)
    assert len(blocks) > 1, output[-3000:]
    rows: dict[str, list[str]] = {}
    for line in blocks[-1].splitlines()[2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.integration
def test_demo_runs_and_stops_cleanly(kafka_broker: Any, unique_topic: str, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        demo_cmd(kafka_broker.bootstrap, unique_topic, port, tmp_path, "--duration", "25", "--no-kafka-down"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert f"http://127.0.0.1:{port}/metrics" in out
    rows = last_table(out)
    assert "* (any feature)" in rows and "search" in rows, out[-3000:]
    every = [int(c.replace(",", "")) for c in rows["* (any feature)"] if c[0].isdigit() and "%" not in c]
    assert all(n > 0 for n in every), rows
    search = rows["search"]
    assert int(search[-1].replace(",", "")) > 0  # uses
    accepted = re.findall(r"events by outcome: accepted ([\d,]+)", out)
    assert int(accepted[-1].replace(",", "")) > 3000 * 0.9
    assert "Kafka left running (--no-kafka-down)" in out
    assert "everything stopped" in out
    assert not port_in_use(port)  # the worker is gone
    if MONITORING:
        ports = monitoring_ports(out)
        assert ports, out[-3000:]
        assert "AdoptionRolloutStalled to owner" in out
        assert all(not port_in_use(p) for p in ports)  # Prometheus and Alertmanager are gone
    else:
        assert "monitoring: skipped" in out


@pytest.mark.integration
@pytest.mark.e2e
@needs_monitoring
@pytest.mark.timeout(300)
def test_demo_shows_the_stalled_rollout_alert_and_stops_on_ctrl_c(
    kafka_broker: Any, unique_topic: str, tmp_path: Path
) -> None:
    """The demo plan's stalled wave reaches the owner's webhook and shows under the table; then SIGINT."""
    port = free_port()
    proc = subprocess.Popen(
        demo_cmd(kafka_broker.bootstrap, unique_topic, port, tmp_path, "--stall-window", "15"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if re.match(r"\s+FIRING\s+AdoptionRolloutStalled\s+one-click-checkout / berlin\s+->", line):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(timeout=180), "".join(lines)[-4000:]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(timeout=90) == 0, "".join(lines)[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    out = "".join(lines)
    assert "checkout.one-click adoption stalled at 20%" in out
    assert "Prometheus, Alertmanager and the webhook receiver stopped" in out
    assert "kafka down: No local Kafka in" in out  # --kafka-dir without a broker: nothing to stop
    assert "everything stopped" in out
    deadline = time.monotonic() + 10
    ports = [port, *monitoring_ports(out)]
    while not all(not port_in_use(p) for p in ports):
        assert time.monotonic() < deadline, f"still listening: {[p for p in ports if port_in_use(p)]}"
        time.sleep(0.2)
