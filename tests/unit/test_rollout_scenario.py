"""The compressed stall scenario (e2e test, demo): its plan validates and its traffic does what it says."""

from __future__ import annotations

from pathlib import Path

import yaml

from adoptstream.rollout.plan import load_plan_text
from adoptstream_dev.scenario import StallScenario, scenario_stack


def test_plan_is_valid_and_compressed() -> None:
    scenario = StallScenario()
    plan = load_plan_text(scenario.plan_yaml(1_800_000_000))
    rollout = plan.rollouts[0]
    assert rollout.owner == scenario.owner and rollout.team == scenario.team
    assert [w.cohorts for w in rollout.waves] == [(scenario.healthy_cohort,), (scenario.stalled_cohort,)]
    assert all(w.stall.window_s == 40 and w.stall.hold_s == 4 for w in rollout.waves)


def test_traffic_stalls_one_wave_and_grows_the_other() -> None:
    scenario = StallScenario()
    exposed: dict[str, set[str]] = {}
    adopted: set[str] = set()
    seen_ids: set[tuple[str, str]] = set()
    for second in range(0, 120):
        for event in scenario.events_due(float(second), 1_800_000_000_000 + second * 1000):
            key = (event["user_id"], event["event_id"])
            assert key not in seen_ids
            seen_ids.add(key)
            if event["type"] == "exposure":
                exposed.setdefault(event["cohort"], set()).add(event["user_id"])
            elif event["type"] == "use" and event["feature"] == scenario.feature:
                adopted.add(event["user_id"])
        healthy = len(adopted & exposed[scenario.healthy_cohort]) / scenario.users_per_wave
        stalled = len(adopted & exposed[scenario.stalled_cohort]) / scenario.users_per_wave
        assert stalled == 0.2
        if second >= scenario.healthy_done_after_s:
            assert healthy >= scenario.target
    assert healthy >= scenario.target


def test_scenario_stack_renders_plan_rules_and_owner_routes(tmp_path: Path) -> None:
    scenario = StallScenario()
    stack = scenario_stack(scenario, tmp_path, ["127.0.0.1:1"])
    rules = yaml.safe_load((tmp_path / "rollouts.rules.yml").read_text())
    assert any(r.get("alert") == "AdoptionRolloutStalled" for g in rules["groups"] for r in g["rules"])
    assert callable(stack.alertmanager_config)
    am = yaml.safe_load(stack.alertmanager_config("http://127.0.0.1:9"))
    urls = {r["name"]: r["webhook_configs"][0]["url"] for r in am["receivers"]}
    assert urls[f"owner-{scenario.owner}"] == f"http://127.0.0.1:9/owners/{scenario.owner}"
    assert len(stack.rule_files) == 2


def test_young_wave_is_a_third_wave_too_small_to_judge() -> None:
    scenario = StallScenario(young_users=5)
    rollout = load_plan_text(scenario.plan_yaml(1_800_000_000)).rollouts[0]
    assert [w.name for w in rollout.waves] == [
        scenario.healthy_wave,
        scenario.stalled_wave,
        scenario.young_wave,
    ]
    assert scenario.young_users < rollout.waves[2].stall.min_exposed
    events = scenario.events_due(0.0, 1_800_000_000_000) + scenario.events_due(60.0, 1_800_000_060_000)
    young = [
        e for e in events if e.get("cohort") == scenario.young_cohort or scenario.young_wave in e["user_id"]
    ]
    assert sorted(e["type"] for e in young) == ["exposure"] * 5 + ["signup"] * 5  # exposed, never adopting
    assert len(StallScenario().plan(1_800_000_000)["rollouts"][0]["waves"]) == 2  # off by default


def test_scenario_stack_takes_more_plans_and_links_the_report(tmp_path: Path) -> None:
    extra = tmp_path / "more.yaml"
    extra.write_text(
        "rollouts:\n"
        "  - {name: r2, feature: f2, owner: o2, strategy: big-bang, start: 2027-01-01, duration: 1d}\n"
    )
    stack = scenario_stack(StallScenario(), tmp_path / "s", ["127.0.0.1:1"], extra_plans=[extra],
                           report_base_url="http://127.0.0.1:9/r")  # fmt: skip
    assert stack.plan_files == [(tmp_path / "s" / "plan.yaml").resolve(), extra.resolve()]
    rules = yaml.safe_load((tmp_path / "s" / "rollouts.rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert {a["labels"]["rollout"] for a in alerts} == {StallScenario().rollout, "r2"}
    assert all(a["annotations"]["report_url"].startswith("http://127.0.0.1:9/r/#rollout-") for a in alerts)
    am = yaml.safe_load(stack.alertmanager_config("http://127.0.0.1:9"))
    assert "owner-o2" in {r["name"] for r in am["receivers"]}
