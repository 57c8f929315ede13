"""Adoption gates end to end, for real: events -> broker -> worker -> Prometheus (rules rendered from the
plan) -> ``adoptstream gate`` and the generated Argo Rollouts / Flagger templates' queries.

The compressed scenario (adoptstream_dev.scenario) with three waves and a 20 s stall window: "lyon"
adopts along (on plan: pass), "berlin" stays at 20 % (stalled: fail), "madrid" has 5 exposed users where
the plan needs 20 to judge (cannot tell yet). Once Prometheus has a stall window of history, the command
must exit 0 / 1 / 2 with a line saying why, and each template's query, evaluated on the same Prometheus
and judged by the tool's own rule (Argo's success/failure conditions, Flagger's threshold range), must
give the same verdict. Time is compressed through the plan's windows like the stalled-rollout e2e test.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from adoptstream.rollout.delivery import FLAGGER_THRESHOLD_RANGE
from adoptstream.rollout.rules import GATE_FAIL, GATE_PASS, GATE_UNKNOWN, WAVE_GATE
from adoptstream_dev.scenario import StallScenario, scenario_stack
from tests.e2e.conftest import needs_monitoring
from tests.e2e.test_stalled_rollout_alert import publish_traffic

pytestmark = [pytest.mark.e2e, pytest.mark.integration, needs_monitoring, pytest.mark.timeout(240)]

ARGO_PHASE = {GATE_PASS: "Successful", GATE_FAIL: "Failed", GATE_UNKNOWN: "Inconclusive"}


def adoptstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adoptstream", *args], capture_output=True, text=True, timeout=60
    )


def argo_phase(metric: dict[str, Any], result: list[float]) -> str:
    """Argo Rollouts' judgement of one measurement (utils/evaluate.EvaluateResult, v1.9.1): failure first,
    then success, else Inconclusive; an empty result makes ``result[0]`` an evaluation Error. Our
    conditions are all of the form ``result[0] == N``."""
    if not result:
        return "Error"
    holds = {}
    for key in ("successCondition", "failureCondition"):
        match = re.fullmatch(r"result\[0\] == (\d+)", metric[key])
        assert match, metric[key]
        holds[key] = result[0] == int(match.group(1))
    if holds["failureCondition"]:
        return "Failed"
    return "Successful" if holds["successCondition"] else "Inconclusive"


def flagger_passes(value: float, threshold_range: dict[str, float]) -> bool:
    """Flagger's check of a custom metric (scheduler_metrics.go, v1.44.0): halt below min or above max."""
    return not (
        ("min" in threshold_range and value < threshold_range["min"])
        or ("max" in threshold_range and value > threshold_range["max"])
    )


async def test_gate_and_generated_templates_agree_on_pass_fail_and_cannot_tell(
    kafka_broker: Any, unique_topic: str, start_worker: Any, tmp_path: Path
) -> None:
    scenario = StallScenario(window_s=20, hold_s=2, young_users=5)
    worker = start_worker(kafka_broker.bootstrap, unique_topic, f"gates-{scenario.run_id}")
    stack = scenario_stack(scenario, tmp_path, [worker.target])
    plan = tmp_path / "plan.yaml"
    templates = tmp_path / "gates"
    rendered = adoptstream(
        "rules", "gates", str(plan), "-o", str(templates), "--prometheus-address", "unused"
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [yaml.safe_load(p.read_text()) for p in sorted(templates.glob("*.yaml"))]
    argo = next(d for d in docs if d["kind"] == "AnalysisTemplate")
    flagger = next(d for d in docs if d["kind"] == "MetricTemplate")
    argo_metric = argo["spec"]["metrics"][0]

    expected = {
        scenario.healthy_wave: GATE_PASS,
        scenario.stalled_wave: GATE_FAIL,
        scenario.young_wave: GATE_UNKNOWN,
    }
    stop = asyncio.Event()
    traffic: asyncio.Task[int] | None = None
    began = time.monotonic()
    try:
        await asyncio.to_thread(worker.wait_ready)
        await asyncio.to_thread(stack.start)
        traffic = asyncio.create_task(publish_traffic(kafka_broker.bootstrap, unique_topic, scenario, stop))

        # Prometheus's recorded verdicts settle once it has a stall window of history
        verdicts: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while verdicts != expected and time.monotonic() < deadline:
            worker.assert_alive()
            assert not traffic.done() or traffic.exception() is None, traffic.exception()
            found = await asyncio.to_thread(stack.query, f'{WAVE_GATE}{{rollout="{scenario.rollout}"}}')
            verdicts = {s["metric"]["wave"]: int(float(s["value"][1])) for s in found}
            await asyncio.sleep(1)  # polling cadence; the loop has its own deadline
        settled_after = time.monotonic() - began
        assert verdicts == expected, f"verdicts {verdicts} after {settled_after:.0f}s"
        assert stack.rule_health() == [], "a rule failed to evaluate"

        # the command: its exit code, its line, its numbers
        lines: dict[str, str] = {}
        for wave, verdict in expected.items():
            base = ["gate", str(plan), "--rollout", scenario.rollout, "--wave", wave]
            proc = await asyncio.to_thread(adoptstream, *base, "--prometheus", stack.prometheus_url)
            assert proc.returncode == verdict, (wave, proc.stdout, proc.stderr)
            lines[wave] = proc.stdout.strip()
            numbers = await asyncio.to_thread(
                adoptstream, *base, "--prometheus", stack.prometheus_url, "--json"
            )
            assert numbers.returncode == verdict, numbers.stdout
            doc = json.loads(numbers.stdout)
            assert doc["verdict"] == {0: "pass", 1: "fail", 2: "cannot-tell"}[verdict]
            assert doc["plan"]["min_exposed"] == scenario.min_exposed
        assert lines[scenario.healthy_wave].startswith(f"wave lyon of {scenario.rollout}: PASS — adoption ")
        assert lines[scenario.stalled_wave].startswith(
            f"wave berlin of {scenario.rollout}: FAIL — stalled: gained 0 points in the last 20 seconds"
        ), lines
        assert lines[scenario.young_wave] == (
            f"wave madrid of {scenario.rollout}: CANNOT TELL — 5 exposed users, fewer than the "
            f"{scenario.min_exposed} the plan needs to judge"
        )

        # the generated templates, judged by each tool's rule on the same Prometheus
        for wave, verdict in expected.items():
            argo_query = argo_metric["provider"]["prometheus"]["query"].replace("{{args.wave}}", wave)
            argo_result = [float(s["value"][1]) for s in await asyncio.to_thread(stack.query, argo_query)]
            assert argo_phase(argo_metric, argo_result) == ARGO_PHASE[verdict], (wave, argo_result)
            flagger_query = flagger["spec"]["query"].replace("{{ variables.wave }}", wave)
            flagger_result = [
                float(s["value"][1]) for s in await asyncio.to_thread(stack.query, flagger_query)
            ]
            assert len(flagger_result) == 1, flagger_result  # Flagger reads one value
            assert flagger_passes(flagger_result[0], FLAGGER_THRESHOLD_RANGE) == (verdict == GATE_PASS), wave

        # what a wrong address gives: cannot tell (exit 2), not a pass
        unreachable = await asyncio.to_thread(
            adoptstream, "gate", str(plan), "--rollout", scenario.rollout, "--wave", scenario.healthy_wave,
            "--prometheus", "http://127.0.0.1:9", "--timeout", "2",
        )  # fmt: skip
        assert unreachable.returncode == GATE_UNKNOWN, unreachable.stdout
        print(f"verdicts settled {settled_after:.0f}s after the start: {lines}")
    finally:
        stop.set()
        if traffic is not None:
            await asyncio.wait_for(asyncio.shield(traffic), timeout=30)
        stack.stop()
