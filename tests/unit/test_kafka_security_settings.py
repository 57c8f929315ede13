"""TLS and SASL settings: validated once, secrets from a file or the environment only, never shown."""

from __future__ import annotations

import argparse
import os
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from adoptstream import app as cli
from adoptstream.runtime.config import ConfigError, KafkaSettings, WorkerConfig
from adoptstream.runtime.connection import client_options, ssl_context
from adoptstream_dev.certificates import Certificates, make_certificates

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def no_adoptstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ADOPTSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["worker", *argv])


def password_file(tmp_path: Path, text: str = SECRET + "\n") -> Path:
    path = tmp_path / "password"
    path.write_text(text)
    return path


def test_plaintext_by_default_and_the_options_say_so() -> None:
    settings = KafkaSettings()
    assert settings.security_protocol == "PLAINTEXT" and settings.ssl_check_hostname
    assert client_options(settings) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_with_a_password_file(tmp_path: Path, certs: Certificates) -> None:
    config = WorkerConfig(
        security_protocol="sasl_ssl",
        ssl_ca_file=certs.ca_file,
        sasl_mechanism="scram-sha-512",
        sasl_username="alice",
        sasl_password_file=password_file(tmp_path),
    )
    options = client_options(config)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "alice"
    assert options["sasl_plain_password"] == SECRET  # the line break `echo` leaves is not part of it
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_the_password_comes_from_the_environment_never_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("ADOPTSTREAM_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("ADOPTSTREAM_SASL_USERNAME", "bob")
    monkeypatch.setenv("ADOPTSTREAM_SASL_PASSWORD", SECRET)
    config = cli.config_from(parse())
    assert config.sasl_secret() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
    with pytest.raises(SystemExit):
        parse("--sasl-password", SECRET)


def test_one_password_source_and_no_secret_in_the_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ADOPTSTREAM_SASL_PASSWORD", SECRET)
    with pytest.raises(ConfigError) as error:
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="PLAIN",
            sasl_username="bob",
            sasl_password_file=password_file(tmp_path),
        )
    assert "exactly one of --sasl-password-file / ADOPTSTREAM_SASL_PASSWORD_FILE and" in str(error.value)
    assert SECRET not in str(error.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "--sasl-mechanism / ADOPTSTREAM_SASL_MECHANISM is required"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
            "--sasl-username / ADOPTSTREAM_SASL_USERNAME is required",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
            "needs the password from exactly one of",
        ),
        ({"security_protocol": "SSL", "sasl_username": "u"}, "ADOPTSTREAM_SASL_USERNAME is set, but"),
        (
            {"security_protocol": "TLS"},
            "--security-protocol / ADOPTSTREAM_SECURITY_PROTOCOL: Input should be",
        ),
        ({"sasl_mechanism": "GSSAPI"}, "--sasl-mechanism / ADOPTSTREAM_SASL_MECHANISM: Input should be"),
        ({"connect_timeout_ms": 0}, "--connect-timeout-ms / ADOPTSTREAM_CONNECT_TIMEOUT_MS: must be >= 1"),
    ],
)
def test_incomplete_or_unknown_settings_name_the_setting(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KafkaSettings(**values)


def test_tls_files_must_exist_and_need_a_tls_protocol(tmp_path: Path, certs: Certificates) -> None:
    with pytest.raises(ConfigError, match=r"--ssl-ca-file / ADOPTSTREAM_SSL_CA_FILE: .*missing.pem: no such"):
        KafkaSettings(security_protocol="SSL", ssl_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"ADOPTSTREAM_SSL_CA_FILE is set, but .* is PLAINTEXT"):
        KafkaSettings(ssl_ca_file=certs.ca_file)
    with pytest.raises(ConfigError, match="ADOPTSTREAM_SSL_KEY_FILE is set without"):
        KafkaSettings(security_protocol="SSL", ssl_key_file=certs.client_key)
    assert KafkaSettings(ssl_ca_file="").ssl_ca_file is None  # an empty variable is an unset one


def test_hostname_check_flag_and_variable(monkeypatch: pytest.MonkeyPatch, certs: Certificates) -> None:
    monkeypatch.setenv("ADOPTSTREAM_SECURITY_PROTOCOL", "SSL")
    assert cli.config_from(parse()).ssl_check_hostname is True
    assert cli.config_from(parse("--no-ssl-check-hostname")).ssl_check_hostname is False
    monkeypatch.setenv("ADOPTSTREAM_SSL_CHECK_HOSTNAME", "false")
    config = cli.config_from(parse())
    assert config.ssl_check_hostname is False
    context = ssl_context(config)
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED  # the chain still counts
    assert cli.config_from(parse("--ssl-check-hostname")).ssl_check_hostname is True


def test_mutual_tls_with_an_encrypted_key(tmp_path: Path, certs: Certificates) -> None:
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), password=None)
    encrypted = tmp_path / "client-key.enc.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(SECRET.encode()),
        )
    )
    settings = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_file=certs.ca_file,
        ssl_cert_file=certs.client_cert,
        ssl_key_file=encrypted,
        ssl_key_password_file=password_file(tmp_path),
    )
    assert isinstance(ssl_context(settings), ssl.SSLContext)
    wrong = KafkaSettings(
        security_protocol="SSL",
        ssl_cert_file=certs.client_cert,
        ssl_key_file=encrypted,
        ssl_key_password_file=password_file(tmp_path, "nope"),
    )
    with pytest.raises(
        ConfigError, match="ADOPTSTREAM_SSL_KEY_PASSWORD_FILE: the client certificate and key"
    ):
        ssl_context(wrong)


def test_a_file_that_is_no_certificate_names_its_setting(tmp_path: Path, certs: Certificates) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"--ssl-ca-file / ADOPTSTREAM_SSL_CA_FILE: .* no usable CA"):
        ssl_context(KafkaSettings(security_protocol="SSL", ssl_ca_file=junk))
    with pytest.raises(ConfigError, match="--ssl-cert-file / ADOPTSTREAM_SSL_CERT_FILE and --ssl-key-file"):
        ssl_context(KafkaSettings(security_protocol="SSL", ssl_cert_file=junk, ssl_key_file=certs.client_key))
