"""A real Prometheus scrapes a real worker over TLS with basic auth (the exporters' web config file).

Three jobs scrape the same worker: with the CA and the right password (up, and the worker's contract
numbers arrive), with a wrong password (down: 401) and over plain HTTP (down: the port speaks TLS).
"""

from __future__ import annotations

import time
from pathlib import Path

import bcrypt
import orjson
import pytest
from confluent_kafka import Producer

from adoptstream_dev.certificates import make_certificates
from adoptstream_dev.monitoring_stack import MonitoringStack
from adoptstream_dev.testing import WorkerProcess
from tests.e2e.conftest import needs_monitoring

pytestmark = [pytest.mark.e2e, pytest.mark.integration, needs_monitoring, pytest.mark.timeout(300)]

USER, PASSWORD = "prometheus", "Scrape-Me-7"


def test_prometheus_scrapes_a_worker_over_tls_with_basic_auth(
    kafka_broker, unique_topic: str, tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path / "certs")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
        f"basic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "wrong").write_text("not-the-password\n")
    worker = WorkerProcess(
        kafka_broker.bootstrap,
        unique_topic,
        tmp_path / "w",
        app_id=unique_topic,
        env={"ADOPTSTREAM_WEB_CONFIG_FILE": str(web_config)},
        web_ca_file=certs.ca_file,
        web_auth=(USER, PASSWORD),
    ).start()
    tls = {"ca_file": str(certs.ca_file)}
    stack = MonitoringStack(
        tmp_path / "monitoring",
        scrape_targets=[worker.target],
        rule_files=[],
        scrape_config={
            "scheme": "https",
            "tls_config": tls,
            "basic_auth": {"username": USER, "password_file": str(tmp_path / "password")},
        },
        extra_scrape_configs=[
            {
                "job_name": "wrong-password",
                "scheme": "https",
                "tls_config": tls,
                "basic_auth": {"username": USER, "password_file": str(tmp_path / "wrong")},
                "static_configs": [{"targets": [worker.target]}],
            },
            {"job_name": "plain-http", "static_configs": [{"targets": [worker.target]}]},
        ],
    )
    try:
        worker.wait_ready()
        stack.start()
        producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
        now_ms = int(time.time() * 1000)
        for i in range(30):
            event = {
                "event_id": f"e{i}",
                "user_id": f"u{i % 6}",
                "type": "use",
                "feature": "search",
                "ts": now_ms,
            }
            producer.produce(unique_topic, orjson.dumps(event), key=f"u{i % 6}".encode())
        assert producer.flush(30) == 0

        deadline = time.monotonic() + 60
        while True:
            worker.assert_alive()
            up = {r["metric"]["job"]: r["value"][1] for r in stack.query("up")}
            accepted = stack.query('sum(adoptstream_events_total{job="adoptstream",outcome="accepted"})')
            counted = accepted[0]["value"][1] if accepted else None
            if up == {"adoptstream": "1", "wrong-password": "0", "plain-http": "0"} and counted == "30":
                break
            assert time.monotonic() < deadline, f"up {up}, accepted {accepted}\n{worker.log_tail()}"
            time.sleep(0.5)
        errors = {
            t["labels"]["job"]: t["lastError"]
            for t in stack._get(f"{stack.prometheus_url}/api/v1/targets")["activeTargets"]
        }
        assert "401" in errors["wrong-password"], errors
        assert errors["plain-http"], errors
        # the process metrics come over the same secured scrape
        assert stack.query('process_resident_memory_bytes{job="adoptstream"}')
    finally:
        stack.stop()
        worker.stop()
