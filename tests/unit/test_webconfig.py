"""The web config file (Prometheus exporters' format): TLS, mutual TLS and basic auth, served for real.

Each server here is the worker's own `WebServer` on a free loopback port, with certificates made at test
time; no Kafka is needed to see who gets in.
"""

from __future__ import annotations

import base64
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry, Counter

from adoptstream.core.totals import AdoptionTotals
from adoptstream.exposition.web import WebServer
from adoptstream.exposition.webconfig import WebConfigError, load_web_config
from adoptstream.runtime.stats import WorkerStats
from adoptstream_dev.certificates import Certificates, make_certificates

USER, PASSWORD = "prometheus", "scrape-Me-1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def password_hash() -> str:
    # the $2y$ prefix htpasswd writes, as in the exporters' documentation
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class Worker:
    """A stand-in of what the web endpoints read of a worker (`WorkerStatus`, `TotalsSource`)."""

    ready = True
    started_at = 0.0
    consumed_topics = ("events",)
    progress = WorkerStats(CollectorRegistry())

    def merged_totals(self) -> AdoptionTotals:
        return AdoptionTotals()

    def partition_totals(self) -> list[AdoptionTotals]:
        return []


async def serve(config_file: Path | None) -> WebServer:
    registry = CollectorRegistry()
    Counter("adoptstream_probe", "a sample to see", registry=registry).inc()
    server = WebServer(
        registry, Worker(), Worker(), "127.0.0.1", 0, load_web_config(config_file) if config_file else None
    )
    await server.start()
    return server


def get(
    url: str,
    *,
    ca: Path | None = None,
    auth: tuple[str, str] | None = None,
    client: tuple[Path, Path] | None = None,
) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    context = ssl.create_default_context(cafile=ca) if ca else None
    if context is not None and client is not None:
        context.load_cert_chain(*client)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.fixture
async def tls_with_users(tmp_path: Path, certs: Certificates, password_hash: str) -> AsyncIterator[WebServer]:
    # relative paths are read from the config file's folder, as the exporters do
    (tmp_path / "server-cert.pem").write_bytes(certs.server_cert.read_bytes())
    (tmp_path / "server-key.pem").write_bytes(certs.server_key.read_bytes())
    config = write(
        tmp_path / "web.yml",
        "tls_server_config:\n  cert_file: server-cert.pem\n  key_file: server-key.pem\n"
        "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n"
        f"basic_auth_users:\n  {USER}: {password_hash}\n",
    )
    server = await serve(config)
    yield server
    await server.stop()


async def test_without_a_file_nothing_changes() -> None:
    server = await serve(None)
    try:
        status, body, _ = await _get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200 and "adoptstream_probe_total 1.0" in body
        assert server.scheme == "http"
    finally:
        await server.stop()


async def test_tls_and_basic_auth(tls_with_users: WebServer, certs: Certificates) -> None:
    base = f"https://127.0.0.1:{tls_with_users.port}"
    status, body, headers = await _get(base + "/metrics", ca=certs.ca_file, auth=(USER, PASSWORD))
    assert status == 200 and "adoptstream_probe_total 1.0" in body
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    status, body, _ = await _get(base + "/metrics", ca=certs.ca_file, auth=(USER, PASSWORD))  # remembered
    assert status == 200
    for auth in (None, (USER, "wrong"), ("nobody", PASSWORD), (USER, PASSWORD + "x" * 80)):
        status, body, headers = await _get(base + "/metrics", ca=certs.ca_file, auth=auth)
        assert status == 401 and "adoptstream_probe" not in body, auth
        assert headers["WWW-Authenticate"] == 'Basic realm="adoptstream"'
    status, _, _ = await _get(base + "/api/summary", ca=certs.ca_file)
    assert status == 401
    for probe in ("/healthz", "/ready"):  # probes cannot carry secrets; they reveal nothing
        status, _, _ = await _get(base + probe, ca=certs.ca_file)
        assert status == 200, probe


async def test_tls_is_verified_and_plain_http_is_refused(
    tls_with_users: WebServer, certs: Certificates
) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await _get(f"https://127.0.0.1:{tls_with_users.port}/healthz", ca=certs.unknown_ca_file)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        await _get(f"http://127.0.0.1:{tls_with_users.port}/healthz")


async def test_mutual_tls(tmp_path: Path, certs: Certificates) -> None:
    config = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.ca_file}\n",
    )
    server = await serve(config)
    try:
        url = f"https://127.0.0.1:{server.port}/metrics"
        status, body, _ = await _get(url, ca=certs.ca_file, client=(certs.client_cert, certs.client_key))
        assert status == 200 and "adoptstream_probe" in body
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            await _get(url, ca=certs.ca_file)
    finally:
        await server.stop()


async def _get(url: str, **kwargs: object) -> tuple[int, str, dict[str, str]]:
    import asyncio

    return await asyncio.to_thread(get, url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tls_server_config: {cert_file: a.pem}\n", "needs cert_file and key_file"),
        ("tls_server_config: {cert_file: a.pem, key_file: b.pem}\n", "cannot load"),
        (
            "tls_server_config: {cert_file: c, key_file: k, cipher_suites: [x]}\n",
            "cipher_suites is not supported",
        ),
        ("basic_auth_users: {alice: secret}\n", "basic_auth_users.alice is not a bcrypt hash"),
        ("basic_auth_users: [alice]\n", "must map user names"),
        ("http_server_config: {headers: {Server: x}}\n", "'Server' is not one of"),
        ("web_server_config: {}\n", "unknown key 'web_server_config'"),
        ("tls_server_config: [\n", "cannot read it"),
    ],
)
def test_a_wrong_file_names_the_key(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "web.yml", text)
    with pytest.raises(WebConfigError, match="--web-config-file / ADOPTSTREAM_WEB_CONFIG_FILE: ") as error:
        load_web_config(path)
    assert problem in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("  client_auth_type: RequestClientCert\n", "client_auth_type 'RequestClientCert': use one of"),
        ("  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
        ("  client_ca_file: ca.pem\n", "client_ca_file is set but client_auth_type is NoClientCert"),
        ("  min_version: TLS9\n", "min_version 'TLS9'"),
    ],
)
def test_client_auth_and_versions_are_checked(
    tmp_path: Path, certs: Certificates, extra: str, problem: str
) -> None:
    path = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {certs.server_cert}\n  key_file: {certs.server_key}\n{extra}",
    )
    with pytest.raises(WebConfigError, match=problem):
        load_web_config(path)


def test_the_setting_wants_a_readable_file(tmp_path: Path) -> None:
    from adoptstream.runtime.config import ConfigError, WorkerConfig

    with pytest.raises(ConfigError, match=r"--web-config-file / ADOPTSTREAM_WEB_CONFIG_FILE: .*no such"):
        WorkerConfig(web_config_file=tmp_path / "missing.yml")
    assert WorkerConfig(web_config_file="").web_config_file is None
