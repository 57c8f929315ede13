"""Settings declared once: the same field is a flag, an ADOPTSTREAM_* variable and a default."""

from __future__ import annotations

import argparse

import pytest

from adoptstream import app as cli
from adoptstream import publish
from adoptstream.runtime.config import ConfigError, TopicSettings, WorkerConfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["worker", *argv])


@pytest.fixture(autouse=True)
def no_adoptstream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the process environment: start every test without ADOPTSTREAM_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("ADOPTSTREAM_"):
            monkeypatch.delenv(name)


def test_instance_id_is_off_by_default() -> None:
    assert WorkerConfig().instance_id is None
    assert cli.config_from(parse()).instance_id is None


@pytest.mark.parametrize("value", ["adoptstream-0", "w", "Worker_1.eu-west-1", "x" * 200])
def test_instance_id_accepts_pod_names_and_friends(value: str) -> None:
    assert WorkerConfig(instance_id=value).instance_id == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("x" * 201, "at most 200"),
        ("pod 0", "' '"),
        ("pod/0", "'/'"),
        ("adoptstream-0\n", "'\\n'"),
        ("zoë", "'ë'"),
        ("a:b", "':'"),
    ],
)
def test_instance_id_rejects_what_is_no_stable_name(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="instance id") as exc:
        WorkerConfig(instance_id=value)
    assert message in str(exc.value)
    assert "--instance-id / ADOPTSTREAM_INSTANCE_ID" in str(exc.value)


def test_instance_id_from_env_and_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADOPTSTREAM_INSTANCE_ID", "adoptstream-1")
    assert cli.config_from(parse()).instance_id == "adoptstream-1"
    assert cli.config_from(parse("--instance-id", "w-2")).instance_id == "w-2"
    monkeypatch.setenv("ADOPTSTREAM_INSTANCE_ID", "")
    with pytest.raises(ConfigError, match="empty"):
        cli.config_from(parse())


def test_session_timeout_from_env_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerConfig().session_timeout_ms == 10_000
    monkeypatch.setenv("ADOPTSTREAM_SESSION_TIMEOUT_MS", "45000")
    assert cli.config_from(parse()).session_timeout_ms == 45_000
    assert cli.config_from(parse("--session-timeout-ms", "30000")).session_timeout_ms == 30_000
    monkeypatch.setenv("ADOPTSTREAM_SESSION_TIMEOUT_MS", "45s")
    with pytest.raises(ConfigError, match=r"ADOPTSTREAM_SESSION_TIMEOUT_MS.*valid integer.*'45s'"):
        cli.config_from(parse())


@pytest.mark.parametrize("value", [0, -1, 1_000])
def test_session_timeout_must_outlast_the_heartbeat(value: int) -> None:
    with pytest.raises(ConfigError, match="heartbeat"):
        WorkerConfig(session_timeout_ms=value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("broker", "localhost", "is not host:port"),
        ("topic", "my topic", "use letters"),
        ("app_id", "", "use letters"),
        ("partitions", 0, ">= 1"),
        ("store", "disk", "'rocksdb' or 'memory'"),
        ("web_port", 70_000, "out of range"),
        ("max_cohorts", 0, ">= 1"),
    ],
)
def test_each_bad_setting_is_named_in_one_line(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        WorkerConfig(**{field: value})
    text = str(exc.value)
    assert message in text and f"ADOPTSTREAM_{field.upper()}" in text and "\n" not in text


def test_every_setting_has_a_flag_and_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """One declaration: each field is settable by its flag and by its variable, the flag winning."""
    flags = {
        "broker": ("kafka://a:1", "kafka://b:2"),
        "topic": ("t1", "t2"),
        "web_port": ("7001", "7002"),
        "app_id": ("a1", "a2"),
        "max_features": ("5", "6"),
        "store": ("memory", "rocksdb"),
        "log_level": ("WARNING", "ERROR"),
    }
    for name, (env_value, _) in flags.items():
        monkeypatch.setenv(f"ADOPTSTREAM_{name.upper()}", env_value)
    from_env = cli.config_from(parse())
    argv = [arg for name, (_, v) in flags.items() for arg in (f"--{name.replace('_', '-')}", v)]
    from_flags = cli.config_from(parse(*argv))
    for name, (env_value, flag_value) in flags.items():
        assert str(getattr(from_env, name)) == env_value
        assert str(getattr(from_flags, name)) == flag_value


def test_publish_reads_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    publish.add_parser(parser.add_subparsers())
    monkeypatch.setenv("ADOPTSTREAM_BROKER", "kafka://broker:9093")
    monkeypatch.setenv("ADOPTSTREAM_PARTITIONS", "3")
    args = parser.parse_args(["publish", "-", "--topic", "events"])
    settings = publish.from_flags(TopicSettings, args)
    assert (settings.bootstrap_servers, settings.topic, settings.partitions) == ("broker:9093", "events", 3)


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    out = " ".join(capsys.readouterr().out.split())
    for name in WorkerConfig.model_fields:
        assert f"--{name.replace('_', '-')}" in out and f"ADOPTSTREAM_{name.upper()}" in out
    assert "--instance-id ID" in out and "ADOPTSTREAM_INSTANCE_ID; default unset" in out
    assert "StatefulSet pod name" in out and "does not leave the groups" in out
    assert "--session-timeout-ms MS" in out and "default 10000" in out
