"""Worker configuration: static membership id and session timeout, from flags, env vars and defaults."""

from __future__ import annotations

import argparse

import pytest

from adoptstream.runtime import cli
from adoptstream.runtime.config import ENV_VARS, ConfigError, WorkerConfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["worker", *argv])


def test_instance_id_is_off_by_default() -> None:
    assert WorkerConfig().instance_id is None
    assert cli.config_from(parse(), environ={}).instance_id is None


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


def test_instance_id_from_env_and_flag_wins() -> None:
    assert ENV_VARS["instance_id"] == "ADOPTSTREAM_INSTANCE_ID"
    env = {"ADOPTSTREAM_INSTANCE_ID": "adoptstream-1"}
    assert cli.config_from(parse(), environ=env).instance_id == "adoptstream-1"
    assert cli.config_from(parse("--instance-id", "w-2"), environ=env).instance_id == "w-2"
    with pytest.raises(ConfigError, match="empty"):
        cli.config_from(parse(), environ={"ADOPTSTREAM_INSTANCE_ID": ""})


def test_session_timeout_from_env_and_flag() -> None:
    assert WorkerConfig().session_timeout_ms == 10_000
    env = {"ADOPTSTREAM_SESSION_TIMEOUT_MS": "45000"}
    assert cli.config_from(parse(), environ=env).session_timeout_ms == 45_000
    assert cli.config_from(parse("--session-timeout-ms", "30000"), environ=env).session_timeout_ms == 30_000
    with pytest.raises(ConfigError, match="not an integer"):
        cli.config_from(parse(), environ={"ADOPTSTREAM_SESSION_TIMEOUT_MS": "45s"})


@pytest.mark.parametrize("value", [0, -1, 1_000])
def test_session_timeout_must_outlast_the_heartbeat(value: int) -> None:
    with pytest.raises(ConfigError, match="heartbeat"):
        WorkerConfig(session_timeout_ms=value)


def test_help_documents_the_new_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "--instance-id ID" in out and "ADOPTSTREAM_INSTANCE_ID; default unset" in out
    assert "StatefulSet pod name" in out and "does not leave the groups" in out
    assert "--session-timeout-ms MS" in out and "default 10000" in out
