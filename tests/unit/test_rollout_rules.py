"""Rules rendered from plans: safe PromQL for any cohort, plan facts and owner labels on every series."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from adoptstream.rollout import rules as R
from adoptstream.rollout.plan import load_plan_text
from adoptstream.rollout.promql import number, one_of, quote, regex_escape, selector

PRINTABLE = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")).filter(str.isprintable),
    min_size=1,
    max_size=64,
)

PLAN = textwrap.dedent(
    """\
    rollouts:
      - name: checkout-pilot
        feature: checkout.one-click
        owner: payments-po
        team: payments
        strategy: pilot
        waves:
          - name: pilot
            cohorts: ['site "Lyon" | a.b\\c (1)']
            start: 2027-01-01T00:00:00Z
            target: 50%
            duration: 2h
            stall: {window: 40s, min_progress: 2%, min_exposed: 20}
          - name: rest
            cohorts: [site-berlin, site-madrid]
            start: 2027-01-01T02:00:00Z
      - name: search-v3
        feature: search.v3
        owner: discovery-po
        strategy: parallel
        old_feature: search.v2
        start: 2027-01-01
    """
)


def rendered(text: str = PLAN) -> dict[str, Any]:
    return R.render_rules(load_plan_text(text))


def records(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for g in doc["groups"] for r in g["rules"] if r.get("record") == name]


def alerts(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == name]


@given(PRINTABLE)
def test_quote_and_regex_escape_reproduce_any_printable_value(value: str) -> None:
    assert json.loads(quote(value)) == value  # Go and JSON share these escapes
    assert re.fullmatch(regex_escape(value), value)


@given(st.lists(PRINTABLE, min_size=1, max_size=5), PRINTABLE)
def test_one_of_matches_exactly_its_members(values: list[str], other: str) -> None:
    pattern = one_of(values)
    for value in values:
        assert re.fullmatch(pattern, value)
    assert bool(re.fullmatch(pattern, other)) == (other in values)


def test_selector_and_numbers() -> None:
    assert selector("m", {"feature": 'a"b'}, {"cohort": "x|y"}) == 'm{feature="a\\"b",cohort=~"x|y"}'
    assert number(0.8) == "0.8" and number(1803974400.0) == "1803974400" and number(3) == "3"


def test_every_wave_series_carries_the_plan_labels() -> None:
    doc = rendered()
    for name in (
        R.WAVE_EXPOSED,
        R.WAVE_ADOPTED,
        R.WAVE_ADOPTION,
        R.WAVE_TARGET,
        R.WAVE_START,
        R.WAVE_DEADLINE,
        R.WAVE_EXPECTED,
    ):
        found = records(doc, name)
        assert [r["labels"]["wave"] for r in found] == ["pilot", "rest"], name
        for rule in found:
            assert rule["labels"]["rollout"] == "checkout-pilot"
            assert rule["labels"]["feature"] == "checkout.one-click"
            assert rule["labels"]["owner"] == "payments-po"
            assert rule["labels"]["team"] == "payments"
            assert rule["labels"]["strategy"] == "pilot"
    pilot = records(doc, R.WAVE_ADOPTION)[0]
    assert pilot["labels"]["cohorts"] == 'site "Lyon" | a.b\\c (1)'
    # regex-escaped, then quoted: site\ \"Lyon\"\ \|\ a\.b\\c\ \(1\) inside a PromQL string
    assert r'cohort=~"site\\ \\\"Lyon\\\"\\ \\|\\ a\\.b\\\\c\\ \\(1\\)"' in pilot["expr"]
    assert records(doc, R.WAVE_TARGET)[0]["expr"] == "vector(0.5)"
    assert records(doc, R.WAVE_START)[1]["expr"] == "vector(1798768800)"
    rest = records(doc, R.WAVE_ADOPTION)[1]
    assert 'cohort=~"site\\\\-berlin|site\\\\-madrid"' in rest["expr"]
    switchover = records(doc, R.SWITCHOVER)[0]
    assert switchover["labels"] == {
        "rollout": "search-v3",
        "feature": "search.v3",
        "old_feature": "search.v2",
        "owner": "discovery-po",
        "team": "discovery-po",
        "strategy": "parallel",
    }
    assert 'feature="search.v2",window="7d"' in switchover["expr"]
    owners = records(doc, R.FEATURE_OWNER)
    assert [r["labels"] for r in owners] == [
        {"feature": "checkout.one-click", "owner": "payments-po", "team": "payments"},
        {"feature": "search.v3", "owner": "discovery-po", "team": "discovery-po"},
    ]


def test_alerts_use_the_plan_thresholds() -> None:
    doc = rendered()
    # the judgement is recorded once per wave, with the plan's thresholds ...
    me = '{rollout="checkout-pilot",wave="pilot"}'
    assert records(doc, R.WAVE_GAIN)[0]["expr"] == f"{R.WAVE_ADOPTION}{me} - {R.WAVE_ADOPTION}{me} offset 40s"
    stalled_rule = records(doc, R.WAVE_STALLED)[0]["expr"]
    assert f"({R.WAVE_ADOPTION}{me} < bool 0.5) * ({R.WAVE_GAIN}{me} < bool 0.02)" in stalled_rule
    assert records(doc, R.WAVE_JUDGED)[0]["expr"] == (
        f"({R.WAVE_EXPOSED}{me} >= bool 20) * (time() >= bool 1798761600)"
    )
    assert records(doc, R.WAVE_BEHIND)[0]["expr"] == (
        f"{R.WAVE_ADOPTION}{me} < bool {R.WAVE_EXPECTED}{me} - 0.1"
    )
    # ... and the alerts (like the gate) read it
    stalled = alerts(doc, "AdoptionRolloutStalled")
    assert len(stalled) == 2
    pilot = stalled[0]
    assert pilot["expr"] == (
        f"{R.WAVE_ADOPTION}{me}\nand {R.WAVE_STALLED}{me} == 1\nand {R.WAVE_JUDGED}{me} == 1"
    )
    assert alerts(doc, "AdoptionBehindPlan")[0]["expr"] == (
        f"{R.WAVE_ADOPTION}{me}\nand {R.WAVE_BEHIND}{me} == 1\nand {R.WAVE_JUDGED}{me} == 1"
    )
    assert pilot["for"] == "4s"
    assert pilot["labels"] == {
        "severity": "warning",
        "category": "adoption",
        "rollout": "checkout-pilot",
        "wave": "pilot",
        "cohort": "{{ $labels.cohorts }}",
    }
    assert set(pilot["annotations"]) == {"summary", "description", "runbook_url", "dashboard_url"}
    assert pilot["annotations"]["runbook_url"] == (
        "https://adoptstream.example.com/docs/runbooks/adoption-rollout-stalled.md"
    )
    assert stalled[1]["for"] == "1h"  # defaults for the rest wave
    assert len(alerts(doc, "AdoptionBehindPlan")) == 2
    assert len(alerts(doc, "AdoptionSwitchoverStalled")) == 1
    assert len(alerts(doc, "AdoptionSwitchoverBehindPlan")) == 1


def test_short_windows_get_a_short_group_interval() -> None:
    groups = {g["name"]: g for g in rendered()["groups"]}
    assert groups["adoptstream-rollout:checkout-pilot"]["interval"] == "1s"
    assert "interval" not in groups["adoptstream-rollout:search-v3"]


def test_links_are_configurable() -> None:
    options = R.RenderOptions(runbook_base_url="https://wiki/x/", dashboard_base_url="https://g/d")
    doc = R.render_rules(load_plan_text(PLAN), options)
    alert = alerts(doc, "AdoptionBehindPlan")[0]
    assert alert["annotations"]["runbook_url"] == "https://wiki/x/adoption-behind-plan.md"
    assert alert["annotations"]["dashboard_url"] == (
        "https://g/d/adoptstream-rollouts?var-rollout=checkout-pilot&var-wave=pilot"
    )


def test_alerts_link_to_the_rollout_report_when_it_is_served() -> None:
    plans = load_plan_text(PLAN)
    every = [a for g in R.render_rules(plans)["groups"] for a in g["rules"] if "alert" in a]
    assert every and all("report_url" not in a["annotations"] for a in every)  # no report: no link
    doc = R.render_rules(plans, R.RenderOptions(report_base_url="https://po.example/report/"))
    by_rollout = {
        (a["alert"], a["labels"]["rollout"]): a for g in doc["groups"] for a in g["rules"] if "alert" in a
    }
    assert len(by_rollout) == 4
    for (_, rollout), alert in by_rollout.items():
        assert alert["annotations"]["report_url"] == f"https://po.example/report/#rollout-{rollout}"


def test_template_literal() -> None:
    assert R.template_literal("plain") == "plain"
    assert R.template_literal('{{ x "y" }}') == '{{ "{{ x \\"y\\" }}" }}'


def test_rendered_text_round_trips() -> None:
    plans = load_plan_text(PLAN)
    text = R.render_rules_text(plans, ["plans.yaml"])
    assert text.startswith("# Generated by `adoptstream rules render plans.yaml`")
    assert yaml.safe_load(text) == R.render_rules(plans)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
@settings(max_examples=5, deadline=None)
@given(st.lists(PRINTABLE, min_size=2, max_size=6, unique=True), PRINTABLE)
def test_promtool_accepts_rules_for_any_cohort_and_wave_names(cohorts: list[str], wave: str) -> None:
    plan = {
        "rollouts": [
            {
                "feature": "f",
                "owner": "po",
                "strategy": "phased",
                "waves": [
                    {"name": wave[:64], "cohorts": cohorts[:1], "start": "2027-01-01T00:00:00Z"},
                    {"name": "second", "cohorts": cohorts[1:], "start": "2027-01-02T00:00:00Z"},
                ],
            }
        ]
    }
    if wave[:64] == "second":
        return
    text = R.render_rules_text(load_plan_text(yaml.safe_dump(plan, allow_unicode=True)), ["p.yaml"])
    proc = subprocess.run(
        ["promtool", "check", "rules", "/dev/stdin"], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_written_rules_file(tmp_path: Path) -> None:
    from adoptstream.cli import main

    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    out = tmp_path / "rules" / "r.yml"
    assert main(["rules", "render", str(plan), "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == R.render_rules(load_plan_text(PLAN))


def test_satisfaction_floor_records_alerts_and_holds_the_gate() -> None:
    text = PLAN.replace(
        "    strategy: pilot\n",
        "    strategy: pilot\n"
        "    satisfaction: {nps: 20, csat: 80%, min_answers: 40, period: 90d, for: 5m}\n",
    )
    doc = rendered(text)
    scores = records(doc, R.SATISFACTION)
    assert [r["expr"] for r in scores] == [
        'sum(adoptstream:nps:score{feature="checkout.one-click",period="90d"})',
        'sum(adoptstream:csat:ratio{feature="checkout.one-click",period="90d"})',
    ]
    assert scores[0]["labels"] == R.satisfaction_labels(load_plan_text(text).rollouts[0], "nps", "90d")
    below = records(doc, R.SATISFACTION_BELOW)
    assert "< bool 0.8)" in below[1]["expr"] and below[1]["expr"].endswith(">= 40")
    floor_alerts = alerts(doc, "AdoptionSatisfactionBelowFloor")
    assert [(a["labels"]["scale"], a["for"]) for a in floor_alerts] == [("nps", "5m"), ("csat", "5m")]
    assert all(a["labels"]["category"] == "adoption" for a in floor_alerts)  # routed like the others
    # both waves' gates fail below a floor and pass only when both floors are judged and met
    gates = records(doc, R.WAVE_GATE)
    assert len(gates) == 2
    for gate in gates:
        assert f'or on() max({R.SATISFACTION_BELOW}{{rollout="checkout-pilot"}} == 1)' in gate["expr"]
        assert f'and on() count({R.SATISFACTION_BELOW}{{rollout="checkout-pilot"}} == 0) == 2' in gate["expr"]
    # recorded before the waves, so a gate reads this evaluation's satisfaction
    group = next(g for g in doc["groups"] if g["name"] == "adoptstream-rollout:checkout-pilot")
    names = [r.get("record") for r in group["rules"]]
    assert names.index(R.SATISFACTION_BELOW) < names.index(R.WAVE_GATE)
    # a rollout without a floor: no satisfaction series, gates without the clause
    assert not records(rendered(), R.SATISFACTION)
    assert all(R.SATISFACTION_BELOW not in g["expr"] for g in records(rendered(), R.WAVE_GATE))
