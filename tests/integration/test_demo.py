"""`adoptstream demo`: a real worker and live traffic on the fixture broker, a table, a clean stop."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adoptstream.demo import port_free, render_table
from adoptstream.localkafka import free_port

MONITORING = all(shutil.which(b) for b in ("prometheus", "prometheus-alertmanager")) and (
    importlib.util.find_spec("adoptstream.monitoring_stack") is not None
)


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
    blocks = output.split("feature           active 1d")
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
        [
            sys.executable,
            "-m",
            "adoptstream",
            "demo",
            "--broker",
            f"kafka://{kafka_broker.bootstrap}",
            "--topic",
            unique_topic,
            "--web-port",
            str(port),
            "--data-dir",
            str(tmp_path / "demo"),
            "--kafka-dir",
            str(tmp_path / "kafka"),
            "--duration",
            "25",
            "--no-kafka-down",
            "--rate",
            "200",
            "--backfill",
            "3000",
        ],
        capture_output=True,
        text=True,
        timeout=150,
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
    assert port_free(port)  # the worker is gone
    if MONITORING:
        assert re.search(r"^monitoring: (?!skipped)", out, re.M), out[-3000:]
    else:
        assert "monitoring: skipped" in out
