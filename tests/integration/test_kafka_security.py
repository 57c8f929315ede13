"""Kafka over TLS, mutual TLS and SASL (PLAIN, SCRAM) against the project's own broker, right and wrong.

One broker for the module, with a listener of each kind next to its PLAINTEXT one; certificates made at
test time, SCRAM users stored by Kafka's StorageTool. Right settings end exact; each wrong one ends the
command with exit code 2 and one line naming the setting to check, well within the connection timeout.

The broker authorizes (StandardAuthorizer): the SASL user and the mutual-TLS client get exactly the ACLs
the README's Production section lists, so the exact runs prove that list is enough.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from adoptstream.runtime.config import KafkaSettings
from adoptstream.runtime.connection import check_connection
from adoptstream_dev.certificates import Certificates, make_certificates
from adoptstream_dev.localkafka import Listener, LocalKafka
from adoptstream_dev.testing import WorkerProcess, free_port
from tests.integration.dataset import build_dataset
from tests.integration.test_exactness import assert_exact, publish_librdkafka, wait_for_all
from tests.integration.test_publish import consume_all

pytestmark = pytest.mark.integration

USER, PASSWORD = "adoptstream", "pa55-Wörd"
MTLS_USER = "adoptstream-client"  # the client certificate's CN, mapped to the principal
CONNECT_TIMEOUT_S = 20


class SecureKafka:
    """The module's broker, its certificates and the password file of its SASL user."""

    def __init__(self, broker: LocalKafka, certs: Certificates, password_file: Path) -> None:
        self.broker, self.certs, self.password_file = broker, certs, password_file

    def url(self, listener: str) -> str:
        return "kafka://" + (
            self.broker.bootstrap if listener == "PLAINTEXT" else self.broker.listener(listener).bootstrap
        )

    def env(self, kind: str) -> dict[str, str]:
        """ADOPTSTREAM_* variables of a client connecting the `kind` way."""
        tls = {"ADOPTSTREAM_SECURITY_PROTOCOL": "SSL", "ADOPTSTREAM_SSL_CA_FILE": str(self.certs.ca_file)}
        if kind == "tls":
            return tls
        if kind == "mtls":
            return {
                **tls,
                "ADOPTSTREAM_SSL_CERT_FILE": str(self.certs.client_cert),
                "ADOPTSTREAM_SSL_KEY_FILE": str(self.certs.client_key),
            }
        mechanism = kind.removeprefix("sasl-").upper()
        return {
            **tls,
            "ADOPTSTREAM_SECURITY_PROTOCOL": "SASL_SSL",
            "ADOPTSTREAM_SASL_MECHANISM": mechanism,
            "ADOPTSTREAM_SASL_USERNAME": USER,
            "ADOPTSTREAM_SASL_PASSWORD_FILE": str(self.password_file),
        }


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    tmp = tmp_path_factory.mktemp("secure-kafka")
    certs = make_certificates(tmp / "certs")
    password_file = tmp / "sasl-password"
    password_file.write_text(PASSWORD + "\n")
    broker = LocalKafka(
        free_port(),
        tmp / "kafka",
        listeners=[
            Listener("SSL", "SSL"),
            Listener("MTLS", "SSL", client_auth="required"),
            Listener("SASL_SSL", "SASL_SSL"),
            Listener("OTHERHOST", "SSL", keystore=certs.other_host_pem),  # a certificate for another name
        ],
        keystore=certs.server_pem,
        truststore=certs.ca_file,
        sasl_users={USER: PASSWORD},
        die_with_parent=True,
        extra_config={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # the PLAINTEXT listener (the broker itself, the tests' own clients) and TLS without a
            # client certificate are ANONYMOUS; the SASL user and the mTLS client only get ACLs
            "super.users": "User:ANONYMOUS",
            "listener.name.mtls.ssl.principal.mapping.rules": "RULE:^CN=([^,]*).*$/$1/,DEFAULT",
        },
    )
    broker.start()
    try:
        yield SecureKafka(broker, certs, password_file)
    finally:
        broker.stop()


def grant(
    secure: SecureKafka, principal: str, *acls: tuple[ResourceType, str, bool, list[AclOperation]]
) -> None:
    """Allow `principal` each (resource type, name, prefixed?, operations), as an admin would."""
    admin = AdminClient({"bootstrap.servers": secure.broker.bootstrap})
    bindings = [
        AclBinding(
            kind,
            name,
            ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL,
            f"User:{principal}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for kind, name, prefixed, operations in acls
        for operation in operations
    ]
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)


def worker_acls(app_id: str, topic: str) -> dict[str, tuple[ResourceType, str, bool, list[AclOperation]]]:
    """The ACLs of README, Production: what a worker reads, writes and creates."""
    read, write, create = AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE
    return {
        "input": (ResourceType.TOPIC, topic, False, [read, create]),
        "dead letters": (ResourceType.TOPIC, f"{topic}.dlq", False, [write, create]),
        "internal topics": (ResourceType.TOPIC, f"{app_id}-{topic}-", True, [read, write, create]),
        "ingest group": (ResourceType.GROUP, f"{app_id}-ingest", False, [read]),
        "state group": (ResourceType.GROUP, f"{app_id}-state", False, [read]),
    }


def grant_worker(secure: SecureKafka, principal: str, app_id: str, topic: str, but: str = "") -> None:
    grant(secure, principal, *(acl for name, acl in worker_acls(app_id, topic).items() if name != but))


def settings(secure: SecureKafka, listener: str, kind: str, **overrides: object) -> KafkaSettings:
    env = {k.removeprefix("ADOPTSTREAM_").lower(): v for k, v in secure.env(kind).items()}
    return KafkaSettings(broker=secure.url(listener), **{**env, **overrides})


@pytest.mark.parametrize(
    ("listener", "kind"),
    [
        ("SSL", "tls"),
        ("MTLS", "mtls"),
        ("SASL_SSL", "sasl-plain"),
        ("SASL_SSL", "sasl-scram-sha-256"),
        ("SASL_SSL", "sasl-scram-sha-512"),
    ],
)
async def test_every_way_in_connects(secure_kafka: SecureKafka, listener: str, kind: str) -> None:
    await check_connection(settings(secure_kafka, listener, kind), timeout_s=10)


async def test_a_certificate_for_another_name_passes_only_without_the_hostname_check(
    secure_kafka: SecureKafka,
) -> None:
    await check_connection(settings(secure_kafka, "OTHERHOST", "tls", ssl_check_hostname=False), timeout_s=10)


@pytest.mark.parametrize(("listener", "kind"), [("SASL_SSL", "sasl-scram-sha-512"), ("MTLS", "mtls")])
def test_worker_over_a_secure_listener_is_exact(
    secure_kafka: SecureKafka, unique_topic: str, tmp_path: Path, listener: str, kind: str
) -> None:
    msgs = build_dataset(n_users=600, seed=23)
    app_id = f"app-{unique_topic}"
    grant_worker(secure_kafka, USER if kind.startswith("sasl") else MTLS_USER, app_id, unique_topic)
    worker = WorkerProcess(
        secure_kafka.url(listener),
        unique_topic,
        tmp_path / "w",
        app_id=app_id,
        env=secure_kafka.env(kind),
    ).start()
    try:
        worker.wait_ready()
        publish_ns = time.time_ns()
        publish_librdkafka(secure_kafka.broker.bootstrap, unique_topic, msgs)  # apps may use another listener
        wait_for_all([worker], len(msgs))
        assert_exact([worker], msgs, publish_ns)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert PASSWORD not in worker.log_path.read_text()


def test_publish_over_sasl_ssl(secure_kafka: SecureKafka, unique_topic: str) -> None:
    grant(
        secure_kafka,
        USER,
        (ResourceType.TOPIC, unique_topic, False, [AclOperation.WRITE, AclOperation.CREATE]),
    )
    lines = [
        orjson.dumps({"event_id": f"e{i}", "user_id": f"u{i}", "type": "signup", "ts": 1}) for i in range(50)
    ]
    env = {**os.environ, **secure_kafka.env("sasl-scram-sha-256")}
    del env["ADOPTSTREAM_SASL_PASSWORD_FILE"]
    env["ADOPTSTREAM_SASL_PASSWORD"] = PASSWORD  # the other way to hand over the secret
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "adoptstream",
            "publish",
            "-",
            "--broker",
            secure_kafka.url("SASL_SSL"),
            "--topic",
            unique_topic,
        ],
        input=b"\n".join(lines),
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert PASSWORD not in proc.stderr.decode()
    records = asyncio.run(consume_all(secure_kafka.broker.bootstrap, unique_topic, len(lines)))
    assert sorted(r.value for r in records) == sorted(lines)


WRONG = {
    # case: (listener, kind, changes to the environment, the setting the message must name)
    "wrong password": (
        "SASL_SSL",
        "sasl-scram-sha-512",
        {"password": "not-it"},
        "ADOPTSTREAM_SASL_PASSWORD_FILE",
    ),
    "unknown user": (
        "SASL_SSL",
        "sasl-plain",
        {"ADOPTSTREAM_SASL_USERNAME": "mallory"},
        "ADOPTSTREAM_SASL_USERNAME",
    ),
    "unknown CA": ("SSL", "tls", {"ADOPTSTREAM_SSL_CA_FILE": "unknown_ca_file"}, "ADOPTSTREAM_SSL_CA_FILE"),
    "hostname mismatch": ("OTHERHOST", "tls", {}, "ADOPTSTREAM_SSL_CHECK_HOSTNAME"),
    "plaintext client, TLS port": ("SSL", "plaintext", {}, "ADOPTSTREAM_SECURITY_PROTOCOL"),
    "TLS client, plaintext port": ("PLAINTEXT", "tls", {}, "ADOPTSTREAM_SECURITY_PROTOCOL"),
    "SASL client, plaintext port": ("PLAINTEXT", "sasl-scram-sha-256", {}, "ADOPTSTREAM_SECURITY_PROTOCOL"),
    "no client certificate for mTLS": ("MTLS", "tls", {}, "ADOPTSTREAM_SSL_CERT_FILE"),
    "SASL client, TLS-only port": ("SSL", "sasl-plain", {}, "ADOPTSTREAM_SECURITY_PROTOCOL"),
    "TLS client, SASL_SSL port": ("SASL_SSL", "tls", {}, "ADOPTSTREAM_SECURITY_PROTOCOL"),
}


# publish shares the worker's connection check: three cases show it
@pytest.mark.parametrize(
    ("command", "case"),
    [("worker", case) for case in WRONG]
    + [("publish", case) for case in ("wrong password", "unknown CA", "plaintext client, TLS port")],
)
def test_a_wrong_setting_fails_at_once_naming_it(
    secure_kafka: SecureKafka, tmp_path: Path, unique_topic: str, command: str, case: str
) -> None:
    listener, kind, changes, setting = WRONG[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADOPTSTREAM_")}
    env.update({} if kind == "plaintext" else secure_kafka.env(kind))
    for name, value in changes.items():
        if name == "password":
            wrong = tmp_path / "wrong-password"
            wrong.write_text(value)
            env["ADOPTSTREAM_SASL_PASSWORD_FILE"] = str(wrong)
        else:
            env[name] = str(getattr(secure_kafka.certs, value, value))
    env["ADOPTSTREAM_CONNECT_TIMEOUT_MS"] = str(CONNECT_TIMEOUT_S * 1000)
    args = ["--broker", secure_kafka.url(listener), "--topic", unique_topic]
    if command == "worker":
        args += ["--web-port", "0", "--data-dir", str(tmp_path / "data"), "--app-id", unique_topic]
    else:
        args.insert(0, "-")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "adoptstream", command, *args],
        env=env,
        input=b"",
        capture_output=True,
        timeout=CONNECT_TIMEOUT_S * 3,
    )
    took = time.monotonic() - started
    stderr = proc.stderr.decode()
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    print(f"{command} with {case}: exit {proc.returncode} after {took:.2f} s: {last}")
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert last.startswith(f"adoptstream {command}: Kafka at ") and setting in last, stderr
    assert took < CONNECT_TIMEOUT_S / 2, f"{took:.1f} s to fail"
    assert PASSWORD not in stderr and "not-it" not in stderr


def test_no_broker_at_all_keeps_the_worker_waiting_and_not_ready(tmp_path: Path) -> None:
    """Unlike a refused setting, an absent broker is no reason to exit: the worker says why and waits."""
    worker = WorkerProcess(
        f"127.0.0.1:{free_port()}", "t-nobroker", tmp_path, extra=["--connect-timeout-ms", "1000"]
    ).start()
    try:
        deadline = time.monotonic() + 30
        while "no Kafka broker answered" not in worker.log_tail(200):
            worker.assert_alive()
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        assert worker.get("/healthz")[0] == 200 and worker.get("/ready")[0] == 503
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert "Traceback" not in worker.log_tail(200)


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        (
            "internal topics",
            "Kafka refused to create topic app-{topic}-{topic}-",
        ),
        ("ingest group", "GroupAuthorizationFailedError"),
    ],
)
def test_a_missing_acl_ends_the_worker_with_one_line(
    secure_kafka: SecureKafka, tmp_path: Path, unique_topic: str, missing: str, says: str
) -> None:
    app_id = f"app-{unique_topic}"
    grant_worker(secure_kafka, USER, app_id, unique_topic, but=missing)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADOPTSTREAM_")}
    env.update(secure_kafka.env("sasl-scram-sha-512"))
    started = time.monotonic()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "adoptstream", "worker", "--broker", secure_kafka.url("SASL_SSL")),
            *("--topic", unique_topic, "--app-id", app_id, "--web-port", "0", "--data-dir", str(tmp_path)),
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    took = time.monotonic() - started
    last = proc.stderr.decode().strip().splitlines()[-1]
    print(f"worker without the {missing} ACL: exit {proc.returncode} after {took:.2f} s: {last}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr.decode(), proc.stderr.decode()
    assert says.format(topic=unique_topic) in last and "ACLs" in last, last
    assert took < 20, took
