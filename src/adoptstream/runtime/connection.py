"""How every Kafka client connects: the TLS and SASL settings as aiokafka options, checked at start-up.

`client_options` is what each consumer, producer and admin client is built with. `check_connection`
connects once the way they will (TCP, TLS handshake, SASL authentication, a metadata request) before
any of them starts: aiokafka reports a refused login, an untrusted certificate or a protocol mismatch
only as "Unable to bootstrap" (the cause goes to its log). A broker that answers but refuses the
settings is a `ConnectionSettingError` naming the setting to check; one that does not answer within the
connection timeout is `BrokerUnreachable`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.metadata import MetadataRequest

from adoptstream.runtime.config import ConfigError, KafkaSettings

log = logging.getLogger(__name__)


class ConnectionSettingError(ConfigError):
    """A broker answered but refused how we connect (TLS, authentication, protocol); names the setting."""


class BrokerUnreachable(RuntimeError):
    """No bootstrap server answered within the connection timeout."""


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """bootstrap_servers, security_protocol, ssl_context and sasl_* for any aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.uses_tls:
        options["ssl_context"] = ssl_context(settings)
    if settings.uses_sasl:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_secret()
    return options


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """Server verification against the CA file (or the system's CAs), the hostname check, the client
    certificate when one is set. A file that does not load is a `ConfigError` naming its setting."""
    where = type(settings).where
    ca = settings.ssl_ca_file
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where('ssl_ca_file')}: {ca} holds no usable CA certificate ({exc})") from None
    context.check_hostname = settings.ssl_check_hostname  # the chain is verified either way
    if settings.ssl_cert_file is not None:
        key = settings.ssl_key_file
        try:
            context.load_cert_chain(settings.ssl_cert_file, key, password=settings.ssl_key_password())
        except (OSError, ssl.SSLError) as exc:
            names = [where("ssl_cert_file"), *([where("ssl_key_file")] if key else [])]
            if settings.ssl_key_password_file is not None:
                names.append(where("ssl_key_password_file"))
            raise ConfigError(
                f"{' and '.join(names)}: the client certificate and key do not load ({exc})"
            ) from None
    return context


async def check_connection(settings: KafkaSettings, timeout_s: float | None = None) -> None:
    """Connect to a bootstrap server as every client will, and ask it for metadata.

    Returns when one server answered. Raises `ConnectionSettingError` as soon as a server refuses the
    TLS or SASL settings, `BrokerUnreachable` when none answered within `timeout_s` (default: the
    settings' connection timeout); unreachable servers are tried again until then.
    """
    timeout_s = settings.connect_timeout_ms / 1000 if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    options = client_options(settings)
    options.pop("bootstrap_servers")
    servers = settings.bootstrap_servers.split(",")
    backoff, last = 0.1, ""
    while True:
        for server in servers:
            host, _, port = server.rpartition(":")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(_answer(host, int(port), options, remaining), remaining)
                return
            except Exception as exc:  # every failure is either a refusal or "not answering yet"
                refusal = _refusal(settings, server, exc)
                if refusal is not None:
                    raise ConnectionSettingError(refusal) from None
                if not last:
                    log.info(
                        "Kafka at %s does not answer yet (%s): trying for %g s",
                        server,
                        _reason(exc),
                        timeout_s,
                    )
                last = f"{server}: {_reason(exc)}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnreachable(
                f"no Kafka broker answered at {settings.bootstrap_servers} within {timeout_s:g} s"
                f" (last: {last}); check {type(settings).where('broker')} and that the brokers run"
            )
        await asyncio.sleep(min(backoff, remaining))
        backoff = min(backoff * 2, 2.0)


async def _answer(host: str, port: int, options: dict[str, Any], timeout_s: float) -> None:
    conn = await create_conn(host, port, request_timeout_ms=max(1, int(timeout_s * 1000)), **options)
    try:
        # a broker answers ApiVersions before authentication: only a real request proves the login
        await conn.send(MetadataRequest([]))
    finally:
        conn.close()


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _refusal(settings: KafkaSettings, server: str, exc: BaseException) -> str | None:
    """The one-line explanation of a broker refusing our settings, or None when it did not answer."""
    where = type(settings).where
    protocol = where("security_protocol")
    head = f"Kafka at {server} refused the connection:"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if "mismatch" in (exc.verify_message or ""):
            return (
                f"{head} its certificate does not name {server.rpartition(':')[0]} ({exc.verify_message});"
                f" check {where('broker')} (the host must be one the certificate names) or"
                f" {where('ssl_check_hostname')}"
            )
        return (
            f"{head} its certificate is not trusted ({exc.verify_message}); check {where('ssl_ca_file')}"
            " (the PEM file of the CA that signed the brokers' certificates)"
        )
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return (
            f"{head} authentication as {settings.sasl_username!r} with {settings.sasl_mechanism} failed"
            f" ({_reason(exc)}); check {where('sasl_username')}, {where('sasl_password_file')} or"
            f" {where('sasl_password')}, and {where('sasl_mechanism')}"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"{head} {_reason(exc)}; check {where('sasl_mechanism')}"
    if isinstance(exc, ssl.SSLError):
        hint = (
            f"does it require a client certificate? set {where('ssl_cert_file')} and {where('ssl_key_file')}"
            if "CERTIFICATE_REQUIRED" in str(exc) or "handshake failure" in str(exc)
            else f"is it a TLS listener? check {protocol} and the port"
        )
        return f"{head} the TLS handshake failed ({_reason(exc)}); {hint}"
    if _closed_by_peer(exc):
        taken = f"the listener at this port does not take {settings.security_protocol}"
        if settings.uses_tls:
            return (
                f"{head} it closed the connection during the handshake: {taken} (plaintext? SASL?) or wants"
                f" a client certificate; check {protocol} and the port, or set {where('ssl_cert_file')} and"
                f" {where('ssl_key_file')}"
            )
        return (
            f"{head} it closed the connection during the handshake: {taken} (TLS? SASL?); check"
            f" {protocol} and the port"
        )
    if isinstance(exc, IllegalSaslStateError):
        return f"{head} the listener at this port does not take SASL; check {protocol} and the port"
    if isinstance(exc, KafkaError) and not isinstance(exc, KafkaConnectionError):
        return f"{head} {type(exc).__name__}: {_reason(exc)}"
    return None


def _closed_by_peer(exc: BaseException) -> bool:
    """The broker accepted the TCP connection, then dropped it: it does not speak our protocol."""
    if isinstance(
        exc, ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError | ssl.SSLEOFError
    ):
        return True
    return isinstance(exc, KafkaConnectionError) and "closed" in str(exc)


# the cluster refused an operation the worker needs: an ACL to grant, not a fault to wait out; whatever
# meets one ends with one line naming it (exit 2), as for any setting that cannot work
REFUSED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


def kafka_failure(exc: KafkaError) -> tuple[str, int]:
    """One line and an exit code for a Kafka error that ended a command: 2 when the cluster's ACLs
    refused an operation (a setting to fix), 1 otherwise."""
    line = f"Kafka: {type(exc).__name__}: {_reason(exc)}"
    if isinstance(exc, REFUSED):
        return f"{line}; the user lacks an ACL this needs (see the README, Production: ACLs)", 2
    return line, 1
