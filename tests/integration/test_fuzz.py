"""A fuzz run through the real broker (`make fuzz` runs the same at 1,000,000 messages): the worker never
stops, every message gets its outcome, and the dead-letter topic holds every rejected one byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from adoptstream_dev.fuzz import check_run

pytestmark = pytest.mark.integration


def test_fuzz_every_message_accounted_for(kafka_broker, unique_topic, tmp_path: Path) -> None:
    report = check_run(kafka_broker.bootstrap, unique_topic, tmp_path / "w", 30_000, seed=5, timeout_s=180)
    print("\n".join(report.lines()))
    assert report.reported["invalid"] > 0 and report.reported["accepted"] > 0
    assert set(report.kinds) >= {"valid", "mutated", "random", "deep", "huge", "tombstone", "repeat"}
