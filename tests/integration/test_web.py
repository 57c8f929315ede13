"""A worker's /metrics as Prometheus' own exporters serve it: name[] filter, OpenMetrics, gzip, process."""

from __future__ import annotations

import gzip
import urllib.request
from pathlib import Path

import pytest

from adoptstream_dev.testing import WorkerProcess, parse_samples

pytestmark = pytest.mark.integration


def fetch(url: str, **headers: str) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}, resp.read()


@pytest.fixture(scope="module")
def worker(kafka_broker, tmp_path_factory: pytest.TempPathFactory) -> WorkerProcess:
    tmp: Path = tmp_path_factory.mktemp("web")
    w = WorkerProcess(kafka_broker.bootstrap, "t-web", tmp, app_id="t-web").start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


def test_name_filter_serves_only_the_named_families(worker: WorkerProcess) -> None:
    _, body = fetch(worker.url("/metrics?name[]=adoptstream_events_total&name[]=adoptstream_ready"))
    names = {name for name, _ in parse_samples(body.decode())}
    assert names == {"adoptstream_events_total", "adoptstream_ready"}


def test_openmetrics_is_negotiated(worker: WorkerProcess) -> None:
    headers, body = fetch(worker.url("/metrics"), Accept="application/openmetrics-text; version=1.0.0")
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    headers, body = fetch(worker.url("/metrics"))
    assert headers["content-type"].startswith("text/plain") and b"# EOF" not in body


def test_gzip_is_negotiated(worker: WorkerProcess) -> None:
    headers, body = fetch(worker.url("/metrics"), **{"Accept-Encoding": "gzip"})
    assert headers.get("content-encoding") == "gzip"
    assert b"adoptstream_ready" in gzip.decompress(body)


def test_standard_process_and_python_metrics(worker: WorkerProcess) -> None:
    samples = worker.samples()
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert samples[("adoptstream_ready", ())] == 1
    assert any(name == "adoptstream_processed_records_total" for name in names)
