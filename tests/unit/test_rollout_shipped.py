"""The shipped rule, test and Alertmanager files: what the commands render, complete, and accepted by
promtool and amtool (when Debian's prometheus / prometheus-alertmanager are installed)."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from adoptstream.rollout.alertmanager import render_alertmanager_text
from adoptstream.rollout.plan import load_plans
from adoptstream.rollout.rules import RUNBOOKS, render_rules_text
from adoptstream.rollout.static_rules import STATIC_RUNBOOKS, render_static_rules_text

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules"
TESTS = DEPLOY / "prometheus" / "tests"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")

# rendered file -> the plan it is rendered from (paths relative to the repository root)
GENERATED = {
    "deploy/prometheus/rules/rollouts.rules.yml": "deploy/rollouts/example.yaml",
    **{
        f"deploy/prometheus/tests/rules/{name}.rules.yml": f"deploy/prometheus/tests/plans/{name}.yaml"
        for name in ("promtool-plan", "stickiness-plan")
    },
}


@pytest.mark.parametrize(("rules", "plan"), GENERATED.items())
def test_shipped_rules_are_what_the_command_renders(rules: str, plan: str) -> None:
    expected = render_rules_text(load_plans([ROOT / plan]), [plan])
    assert (ROOT / rules).read_text(encoding="utf-8") == expected, (
        f"{rules} is stale: run `adoptstream rules render {plan} -o {rules}`"
    )


def test_shipped_static_rules_are_what_the_command_writes() -> None:
    assert (RULES / "adoptstream.rules.yml").read_text(encoding="utf-8") == render_static_rules_text(), (
        "run `adoptstream rules static -o deploy/prometheus/rules/adoptstream.rules.yml`"
    )


def test_shipped_alertmanager_config_is_what_the_command_renders() -> None:
    plan = "deploy/rollouts/example.yaml"
    expected = render_alertmanager_text(load_plans([ROOT / plan]), [plan])
    assert (DEPLOY / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8") == expected, (
        f"run `adoptstream rules alertmanager {plan} -o deploy/alertmanager/alertmanager.yml`"
    )


def shipped_alerts() -> list[dict[str, Any]]:
    found = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [rule for rule in group["rules"] if "alert" in rule]
    return found


def test_every_alert_is_written_for_people() -> None:
    alerts = shipped_alerts()
    names = {a["alert"] for a in alerts}
    assert names == set(RUNBOOKS) | set(STATIC_RUNBOOKS)
    for alert in alerts:
        labels, notes = alert["labels"], alert["annotations"]
        assert labels["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert labels["category"] in {"adoption", "operational"}, alert["alert"]
        if labels["category"] == "operational":
            assert labels["team"] == "sre"
        assert {"summary", "description", "runbook_url", "dashboard_url"} <= set(notes), alert["alert"]
        runbook = notes["runbook_url"].rsplit("/", 1)[1]
        assert (ROOT / "docs" / "runbooks" / runbook).is_file(), f"{alert['alert']}: docs/runbooks/{runbook}"


def test_every_alert_has_firing_and_silent_promtool_cases() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TESTS.glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in shipped_alerts()}
    assert names <= fires, names - fires
    assert names <= silent, names - silent


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian prometheus) not installed")
def test_promtool_check_and_test_rules() -> None:
    files = [str(p) for p in sorted(RULES.glob("*.yml")) + sorted((TESTS / "rules").glob("*.yml"))]
    check = run([PROMTOOL, "check", "rules", *files])
    assert check.returncode == 0 and "FAILED" not in check.stdout + check.stderr, check.stdout + check.stderr
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(lambda p: run([PROMTOOL, "test", "rules", str(p)]), sorted(TESTS.glob("*.yml")))
        )
    for proc in results:
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(AMTOOL is None, reason="amtool (Debian prometheus-alertmanager) not installed")
def test_amtool_check_config() -> None:
    proc = run([AMTOOL, "check-config", "deploy/alertmanager/alertmanager.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 templates" in proc.stdout
