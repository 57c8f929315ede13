"""Argo Rollouts and Flagger gates from plans: valid against the tools' CRD schemas, querying only the
recorded verdict, what the command writes; and the gate command's words and failures that need no
Prometheus (tests/e2e/test_adoption_gates.py runs it, and the templates' queries, on a real one)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from adoptstream.cli import main
from adoptstream.rollout import rules as R
from adoptstream.rollout.delivery import (
    ARGO_FAILURE,
    ARGO_SUCCESS,
    GateRenderError,
    object_name,
    render_gates,
    render_gates_text,
)
from adoptstream.rollout.gate import ScaleReading, WaveReading, stale_rules, summary_line
from adoptstream.rollout.plan import load_plan_text, load_plans

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
EXAMPLE = "deploy/rollouts/example.yaml"


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema with unknown fields rejected, as ``kubectl apply --validate=strict`` does: an
    object schema listing its properties allows no others unless it preserves unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


SCHEMA_FOR = {
    "AnalysisTemplate": closed(
        json.loads((SCHEMAS / "argo-rollouts-v1.9.1-analysistemplate.json").read_text())
    ),
    "MetricTemplate": closed(json.loads((SCHEMAS / "flagger-v1.44.0-metrictemplate.json").read_text())),
}


def example_gates() -> dict[str, dict[str, Any]]:
    return render_gates(load_plans([ROOT / EXAMPLE]))


@pytest.mark.parametrize("name", sorted(example_gates()))
def test_generated_objects_validate_against_the_crd_schemas(name: str) -> None:
    doc = example_gates()[name]
    jsonschema.validate(doc, SCHEMA_FOR[doc["kind"]])
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"])  # DNS-1123 subdomain


def test_the_closed_schemas_catch_a_misspelt_field() -> None:
    doc = copy.deepcopy(example_gates()["adoption-gate-dark-mode.analysistemplate.yaml"])
    doc["spec"]["metrics"][0]["sucessCondition"] = doc["spec"]["metrics"][0].pop("successCondition")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA_FOR["AnalysisTemplate"])
    flagger = copy.deepcopy(example_gates()["adoption-gate-dark-mode.metrictemplate.yaml"])
    flagger["spec"]["provider"]["type"] = "prometheus2"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(flagger, SCHEMA_FOR["MetricTemplate"])


def test_templates_query_the_recorded_verdict_with_the_gate_conditions() -> None:
    gates = example_gates()
    argo = gates["adoption-gate-one-click-checkout.analysistemplate.yaml"]
    metric = argo["spec"]["metrics"][0]
    assert metric["provider"]["prometheus"]["query"] == (
        f'{R.WAVE_GATE}{{rollout="one-click-checkout",wave=`{{{{args.wave}}}}`}}'
    )
    assert (metric["successCondition"], metric["failureCondition"]) == (ARGO_SUCCESS, ARGO_FAILURE)
    assert (ARGO_SUCCESS, ARGO_FAILURE) == ("result[0] == 0", "result[0] == 1")
    assert [a["name"] for a in argo["spec"]["args"]] == ["wave", "prometheus-address"]
    assert argo["metadata"]["annotations"]["adoptstream/waves"] == "pilot, all-sites"
    flagger = gates["adoption-gate-one-click-checkout.metrictemplate.yaml"]
    assert (
        flagger["spec"]["query"]
        == f'{R.WAVE_GATE}{{rollout="one-click-checkout",wave=`{{{{ variables.wave }}}}`}}'
    )
    # the parallel rollout of the example has no waves: nothing to gate
    assert not any("search" in name for name in gates)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
def test_promtool_parses_every_query_with_any_wave_name(tmp_path: Path) -> None:
    plan = textwrap.dedent(
        """\
        rollouts:
          - name: odd.Name/x:y
            feature: f
            owner: po
            strategy: phased
            waves:
              - {name: 'wave "ünï" \\ | {x} $1', cohorts: [a], start: 2027-01-01}
              - {name: two, cohorts: [b], start: 2027-01-01}
        """
    )
    plans = load_plan_text(plan)
    rules = []
    for doc in render_gates(plans).values():
        if doc["kind"] == "AnalysisTemplate":
            query = doc["spec"]["metrics"][0]["provider"]["prometheus"]["query"]
            placeholder = "{{args.wave}}"
        else:
            query, placeholder = doc["spec"]["query"], "{{ variables.wave }}"
        for wave in plans.rollouts[0].waves:
            rules.append(
                {"record": f"check:gate_{len(rules)}", "expr": query.replace(placeholder, wave.name)}
            )
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}, allow_unicode=True))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    assert len(rules) == 4


def test_object_names_and_render_errors() -> None:
    plans = load_plan_text(
        textwrap.dedent(
            """\
            rollouts:
              - {name: Checkout/One_Click, feature: a, owner: po, strategy: big-bang, start: 2027-01-01}
              - {name: checkout-one-click, feature: b, owner: po, strategy: big-bang, start: 2027-01-01}
            """
        )
    )
    assert object_name(plans.rollouts[0]) == "adoption-gate-checkout-one-click"
    with pytest.raises(
        GateRenderError, match="both make the template name 'adoption-gate-checkout-one-click'"
    ):
        render_gates(plans)
    backtick = load_plan_text(
        "rollouts:\n  - feature: a\n    owner: po\n    strategy: phased\n"
        "    waves: [{name: 'a`b', cohorts: [x], start: 2027-01-01}]\n"
    )
    with pytest.raises(GateRenderError, match="backtick"):
        render_gates(backtick)


def test_shipped_gates_are_what_the_command_renders() -> None:
    files = render_gates_text(load_plans([ROOT / EXAMPLE]), [EXAMPLE])
    shipped = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "deploy" / "gates").glob("*.yaml")}
    assert shipped == files, f"run `adoptstream rules gates {EXAMPLE} -o deploy/gates`"


def test_gates_command_writes_one_file_per_template(tmp_path: Path) -> None:
    assert (
        main(
            ["rules", "gates", str(ROOT / EXAMPLE), "-o", str(tmp_path), "--prometheus-address", "http://p:9"]
        )
        == 0
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(example_gates())
    doc = yaml.safe_load((tmp_path / "adoption-gate-dark-mode.metrictemplate.yaml").read_text())
    assert doc["spec"]["provider"]["address"] == "http://p:9"


# -- the gate command without Prometheus --------------------------------------------------------------

PLAN = """\
rollouts:
  - name: one-click-checkout
    feature: checkout.one-click
    owner: payments-po
    strategy: phased
    satisfaction: {nps: 20, min_answers: 10}
    waves:
      - name: berlin
        cohorts: [site-berlin]
        start: 2027-03-01
        duration: 20d
        stall: {window: 3d, min_exposed: 50}
"""


def reading(**values: Any) -> tuple[WaveReading, Any]:
    plans = load_plan_text(PLAN)
    wave = plans.rollouts[0].waves[0]
    base: dict[str, Any] = {
        "exposed": 400.0,
        "adoption": 0.2,
        "expected": 0.65,
        "gain": 0.0,
        "judged": 1.0,
        "stalled": 1.0,
        "behind_plan": 1.0,
        "target": wave.target,
        "start": wave.start,
        "deadline": wave.deadline,
    }
    base.update(values)
    scale = ScaleReading("nps", 20, 10, score=35, answers=80, below_floor=0, floor_in_prometheus=20)
    return WaveReading(
        "one-click-checkout", "berlin", "checkout.one-click", satisfaction=[scale], **base
    ), wave


def test_summary_line_says_why_in_plain_words() -> None:
    failed, wave = reading(verdict=R.GATE_FAIL)
    now = wave.start + 13 * 86400
    assert summary_line(failed, wave, now) == (
        "wave berlin of one-click-checkout: FAIL — adoption 20% of 400 exposed users is 45 points behind the "
        "65% planned by now; stalled: gained 0 points in the last 3 days (less than 1 point)"
    )
    passed, _ = reading(verdict=R.GATE_PASS, adoption=0.6, gain=0.12, stalled=0.0, behind_plan=0.0)
    assert summary_line(passed, wave, now) == (
        "wave berlin of one-click-checkout: PASS — adoption 60% of 400 exposed users, 5 points behind the "
        "65% planned by now (within its tolerance of 10 points); gained 12 points in the last 3 days; "
        "NPS 35 from 80 answers (floor 20)"
    )
    young, _ = reading(verdict=R.GATE_UNKNOWN, exposed=12.0, judged=0.0, stalled=None)
    assert summary_line(young, wave, now) == (
        "wave berlin of one-click-checkout: CANNOT TELL — 12 exposed users, fewer than the 50 the plan needs "
        "to judge"
    )
    absent, _ = reading(verdict=None)
    assert "CANNOT TELL — Prometheus has no adoptstream:rollout_wave_gate:verdict" in summary_line(
        absent, wave, now
    )


def test_stale_rules_are_noticed() -> None:
    current, wave = reading(verdict=R.GATE_PASS)
    rollout = load_plan_text(PLAN).rollouts[0]
    assert stale_rules(current, wave, rollout) is None
    old, _ = reading(verdict=R.GATE_PASS, target=0.7)
    assert stale_rules(old, wave, rollout) == "Prometheus has the target 70% for this wave, the plan 80%"


def test_gate_exits_2_when_it_cannot_ask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    args = ["gate", str(plan), "--rollout", "one-click-checkout", "--wave", "berlin"]
    assert main([*args, "--prometheus", "http://127.0.0.1:9", "--timeout", "2"]) == 2
    assert capsys.readouterr().out.startswith(
        "wave berlin of one-click-checkout: CANNOT TELL — cannot reach Prometheus at http://127.0.0.1:9"
    )
    assert (
        main(["gate", str(plan), "--rollout", "nope", "--wave", "berlin", "--prometheus", "x", "--json"]) == 2
    )
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "cannot-tell" and out["exit_code"] == 2
    assert "no rollout 'nope' in the plan (one-click-checkout)" in out["message"]
    plan.write_text(PLAN.replace("phased", "phazed"))
    assert main([*args, "--prometheus", "http://127.0.0.1:9"]) == 2
    captured = capsys.readouterr()
    assert "CANNOT TELL — the plan has 1 problem(s)" in captured.out
    assert "'phazed' is not one of" in captured.err
