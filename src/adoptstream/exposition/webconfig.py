"""TLS and basic auth for the web endpoints, from a web config file as Prometheus' own exporters read it.

The format is the exporter toolkit's (`--web.config.file` of node_exporter & co):

    tls_server_config:
      cert_file: server.crt          # PEM certificate (chain); relative paths are from the file's folder
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional: NoClientCert (default),
      client_ca_file: ca.crt                         #   VerifyClientCertIfGiven, RequireAndVerifyClientCert
      min_version: TLS12             # optional: TLS10..TLS13 (default TLS12); max_version likewise
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}   # optional response headers
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Settings the toolkit has and this server cannot honour (cipher_suites, curve_preferences,
RequestClientCert, ...) are refused rather than silently ignored. /healthz and /ready answer without
credentials (probes cannot send secrets); every other endpoint needs them when users are configured.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from aiohttp import web


class WebConfigError(ValueError):
    """A web config file that cannot work; the message names the file and the key."""


OPEN_PATHS = frozenset({"/healthz", "/ready"})  # liveness and readiness: no secret, nothing revealed
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
ALLOWED_HEADERS = frozenset(  # the toolkit's list: security headers only
    {
        "Strict-Transport-Security",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "X-XSS-Protection",
        "Content-Security-Policy",
    }
)
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_WHERE = "--web-config-file / ADOPTSTREAM_WEB_CONFIG_FILE"
# checked when the user is unknown, so that a wrong name costs as long as a wrong password
_DUMMY_HASH = bcrypt.hashpw(b"adoptstream", bcrypt.gensalt(10))
_VERIFIED_MAX = 64


@dataclass(frozen=True)
class WebConfig:
    """What the web endpoints serve with: a TLS context, the users and their bcrypt hashes, headers."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web config file; every problem is a `WebConfigError` naming the file and key."""

    def fail(problem: str) -> WebConfigError:
        return WebConfigError(f"{_WHERE}: {path}: {problem}")

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise fail(f"cannot read it ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise fail("must be a YAML mapping")
    unknown = set(data) - {"tls_server_config", "http_server_config", "basic_auth_users"}
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r}")
    tls = _tls(data.get("tls_server_config"), path.parent, fail)
    users = _users(data.get("basic_auth_users"), fail)
    headers = _headers(data.get("http_server_config"), fail)
    return WebConfig(tls, users, headers)


def _tls(section: Any, base: Path, fail: Callable[[str], WebConfigError]) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise fail("tls_server_config must be a mapping")
    unknown = set(section) - _TLS_KEYS
    if unknown:
        raise fail(f"tls_server_config.{sorted(unknown)[0]} is not supported by adoptstream")
    if not section.get("cert_file") or not section.get("key_file"):
        raise fail("tls_server_config needs cert_file and key_file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = base / str(section["cert_file"]), base / str(section["key_file"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise fail(f"tls_server_config: cannot load {cert} and {key} ({exc})") from None
    for name, attribute in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        version = section.get(name, "TLS12" if name == "min_version" else None)
        if version is None:
            continue
        if version not in TLS_VERSIONS:
            raise fail(f"tls_server_config.{name} {version!r}: use one of {', '.join(TLS_VERSIONS)}")
        setattr(context, attribute, TLS_VERSIONS[version])
    auth_type = section.get("client_auth_type") or "NoClientCert"
    if auth_type not in CLIENT_AUTH:
        raise fail(f"tls_server_config.client_auth_type {auth_type!r}: use one of {', '.join(CLIENT_AUTH)}")
    client_ca = section.get("client_ca_file")
    if client_ca and auth_type == "NoClientCert":
        raise fail("tls_server_config.client_ca_file is set but client_auth_type is NoClientCert")
    if auth_type != "NoClientCert":
        if not client_ca:
            raise fail(f"tls_server_config.client_auth_type {auth_type} needs client_ca_file")
        try:
            context.load_verify_locations(cafile=base / str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise fail(
                f"tls_server_config.client_ca_file: cannot load {base / str(client_ca)} ({exc})"
            ) from None
    context.verify_mode = CLIENT_AUTH[auth_type]
    return context


def _users(section: Any, fail: Callable[[str], WebConfigError]) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise fail("basic_auth_users must map user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for name, hashed in section.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise fail(f"basic_auth_users: {name!r} is not a user name")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise fail(f"basic_auth_users.{name} is not a bcrypt hash ($2y$...)")
        users[name] = hashed.encode()
    return users


def _headers(section: Any, fail: Callable[[str], WebConfigError]) -> dict[str, str]:
    if section is None:
        return {}
    if not isinstance(section, dict) or set(section) - {"headers", "http2"}:
        raise fail("http_server_config takes headers (and http2, which this server ignores)")
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        raise fail("http_server_config.headers must be a mapping")
    for name in headers:
        if name not in ALLOWED_HEADERS:
            raise fail(
                f"http_server_config.headers: {name!r} is not one of {', '.join(sorted(ALLOWED_HEADERS))}"
            )
    return {str(k): str(v) for k, v in headers.items()}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BasicAuth:
    """aiohttp middleware: the configured users' credentials on every endpoint but OPEN_PATHS.

    A bcrypt check costs ~70 ms of CPU, so it runs off the event loop, and credentials that passed are
    remembered (as a SHA-256 digest, never in clear) so that a scrape every few seconds costs nothing.
    """

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._verified: dict[bytes, None] = {}  # digests of user + password that passed, oldest first

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or await self._allowed(request.headers.get("Authorization", "")):
            return await handler(request)
        return web.Response(
            status=401, text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="adoptstream"'}
        )

    async def _allowed(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        digest = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if any(hmac.compare_digest(digest, seen) for seen in self._verified):
            return True
        hashed = self._users.get(user)
        ok = await asyncio.to_thread(_check, password.encode(), hashed or _DUMMY_HASH)
        if ok and hashed is not None:
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.pop(next(iter(self._verified)))
            self._verified[digest] = None
            return True
        return False


def _check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a malformed hash, or a password bcrypt refuses (over 72 bytes)
        return False
