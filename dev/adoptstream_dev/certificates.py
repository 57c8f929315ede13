"""Certificates made at test time (trustme): a CA, a server certificate for 127.0.0.1, a client one.

Everything is written as PEM files in one directory: what a TLS listener of the local broker, a worker's
web endpoint and their clients load. Nothing here is fit for anything but tests on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

SERVER_NAMES = ("127.0.0.1", "localhost")
CLIENT_NAME = "adoptstream-client"
OTHER_NAME = "kafka.invalid"


@dataclass(frozen=True)
class Certificates:
    """PEM files of one test CA and the certificates it issued."""

    ca_file: Path  # the CA certificate clients trust
    server_pem: Path  # private key + certificate chain for SERVER_NAMES (a Kafka PEM keystore)
    server_cert: Path  # the same certificate chain alone
    server_key: Path  # the same key alone
    client_cert: Path  # certificate for CLIENT_NAME (mutual TLS)
    client_key: Path
    other_host_pem: Path  # key + chain issued by the same CA for OTHER_NAME only (hostname mismatch)
    unknown_ca_file: Path  # a CA that issued none of these (an untrusted server)


def make_certificates(directory: Path) -> Certificates:
    """A fresh CA and its certificates, written under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="adoptstream test CA")
    server = ca.issue_cert(*SERVER_NAMES, common_name=SERVER_NAMES[0])
    client = ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME)
    other = ca.issue_cert(OTHER_NAME, common_name=OTHER_NAME)
    certs = Certificates(
        ca_file=directory / "ca.pem",
        server_pem=directory / "server.pem",
        server_cert=directory / "server-cert.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client-cert.pem",
        client_key=directory / "client-key.pem",
        other_host_pem=directory / "other-host.pem",
        unknown_ca_file=directory / "unknown-ca.pem",
    )
    certs.ca_file.write_bytes(ca.cert_pem.bytes())
    certs.server_pem.write_bytes(_pkcs8(server) + _chain(server))
    certs.server_cert.write_bytes(_chain(server))
    certs.server_key.write_bytes(_pkcs8(server))
    certs.client_cert.write_bytes(_chain(client))
    certs.client_key.write_bytes(_pkcs8(client))
    certs.other_host_pem.write_bytes(_pkcs8(other) + _chain(other))
    certs.unknown_ca_file.write_bytes(trustme.CA(organization_name="somebody else's CA").cert_pem.bytes())
    for key in (certs.server_pem, certs.server_key, certs.client_key, certs.other_host_pem):
        key.chmod(0o600)
    return certs


def _chain(cert: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


def _pkcs8(cert: trustme.LeafCert) -> bytes:
    """The private key as unencrypted PKCS#8 PEM: what Kafka's PEM keystore reads (not SEC1)."""
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
