"""End to end, for real: events -> broker -> worker -> Prometheus (rules rendered from a plan) ->
Alertmanager (routes rendered from the plan) -> the owner's webhook. The stack is the demo's
(`adoptstream_dev.scenario.scenario_stack`).

The plan has two waves of one feature. Time is compressed through the plan's windows: a 20 s stall
window instead of days, a 4 s ``for:``, 1 s scrape and evaluation, Alertmanager's group wait derived from
the window. The stalled wave gets 40 exposed users and 8 adopters at once, then no adopter (its users
stay busy with another feature); the healthy wave gains an adopter every 2 s until it passes its 80 %
target. The stalled wave's alert must reach the owner's receiver with its labels and a readable
summary within its window (plus the hold and group wait); the healthy wave must never alert, not even
pending, while it climbs. The plan also sets an NPS floor of 20 for the feature, and 12 users answer
NPS 0 about it: `AdoptionSatisfactionBelowFloor` must reach the owner too, and `adoptstream gate` must
hold even the healthy wave back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from adoptstream_dev.scenario import StallScenario, scenario_stack
from tests.e2e.conftest import needs_monitoring

pytestmark = [pytest.mark.e2e, pytest.mark.integration, needs_monitoring, pytest.mark.timeout(300)]


async def publish_traffic(bootstrap: str, topic: str, scenario: StallScenario, stop: asyncio.Event) -> int:
    """Publishes the scenario's events (keyed by user_id) every second until ``stop``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    began = time.monotonic()
    try:
        while not stop.is_set():
            events = scenario.events_due(time.monotonic() - began, int(time.time() * 1000))
            for event in events:
                await producer.send(topic, json.dumps(event).encode(), key=event["user_id"].encode())
            await producer.flush()
            sent += len(events)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)  # the traffic's own pace
    finally:
        await producer.stop()
    return sent


def wave_alerts(alerts: list[dict[str, Any]], wave: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a.get("labels", {}).get("wave") == wave]


async def test_stalled_wave_alerts_its_owner_and_healthy_wave_stays_silent(
    kafka_broker: Any, unique_topic: str, start_worker: Any, tmp_path: Path
) -> None:
    # and 12 detractors answer about the feature (NPS -100): under the plan's floor of 20
    scenario = StallScenario(window_s=20, nps_floor=20, unhappy_answers=12)
    worker = start_worker(kafka_broker.bootstrap, unique_topic, f"e2e-{scenario.run_id}")
    stack = scenario_stack(scenario, tmp_path, [worker.target], report_base_url="http://127.0.0.1:9/report")
    stop = asyncio.Event()
    traffic: asyncio.Task[int] | None = None
    try:
        await asyncio.to_thread(worker.wait_ready)
        await asyncio.to_thread(stack.start)
        traffic = asyncio.create_task(publish_traffic(kafka_broker.bootstrap, unique_topic, scenario, stop))

        ratio = 'adoptstream:rollout_wave_adoption:ratio{wave="%s"}'
        first_flat: float | None = None  # when Prometheus first saw the stalled wave at its flat level
        first_healthy: float | None = None
        healthy_done = False
        stalled_alert: dict[str, Any] | None = None
        floor_alert: dict[str, Any] | None = None
        healthy_seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.log_tail()
            assert not traffic.done() or traffic.exception() is None, traffic.exception()
            now = time.monotonic()
            stalled_now = await asyncio.to_thread(stack.query, ratio % scenario.stalled_wave)
            healthy_now = await asyncio.to_thread(stack.query, ratio % scenario.healthy_wave)
            if first_flat is None and stalled_now and float(stalled_now[0]["value"][1]) == pytest.approx(0.2):
                first_flat = now
            if first_healthy is None and healthy_now:
                first_healthy = now
            if healthy_now and float(healthy_now[0]["value"][1]) >= scenario.target:
                healthy_done = True
            # the healthy wave: never pending, never firing, never notified
            healthy_seen += wave_alerts(
                await asyncio.to_thread(stack.prometheus_alerts), scenario.healthy_wave
            )
            healthy_seen += wave_alerts(stack.received_alerts(), scenario.healthy_wave)
            assert not healthy_seen, f"the healthy wave alerted: {healthy_seen}"
            if stalled_alert is None:
                found = [
                    a
                    for a in wave_alerts(stack.received_alerts(), scenario.stalled_wave)
                    if a["labels"].get("alertname") == "AdoptionRolloutStalled"
                    and a.get("status") == "firing"
                ]
                if found:
                    stalled_alert = found[0]
                    assert first_flat is not None
                    stalled_after = now - first_flat
            if floor_alert is None:
                floor_alert = next(
                    (
                        a
                        for a in stack.received_alerts()
                        if a["labels"].get("alertname") == "AdoptionSatisfactionBelowFloor"
                        and a.get("status") == "firing"
                    ),
                    None,
                )
            # done once the stalled wave and the floor alerted and the healthy wave climbed past its
            # target, judged over at least one full window (plus hold) of its own
            if (
                stalled_alert is not None
                and floor_alert is not None
                and healthy_done
                and first_healthy is not None
                and now - first_healthy > scenario.window_s + scenario.hold_s + 5
            ):
                break
            await asyncio.sleep(1)  # polling cadence; every wait above has its own deadline
        print(
            f"stalled wave flat from t+0s, its alert at the owner's webhook after {stalled_after:.1f}s "
            f"(window {scenario.window_s}s, for {scenario.hold_s}s); healthy wave done: {healthy_done}"
        )
        assert stack.rule_health() == [], "a rule failed to evaluate"
        assert stalled_alert is not None, (
            f"no AdoptionRolloutStalled at the owner's webhook; Prometheus alerts: "
            f"{await asyncio.to_thread(stack.prometheus_alerts)}; received: {stack.received_alerts()}"
        )
        assert healthy_done, "the healthy wave never reached its target (worker or traffic too slow?)"

        # it reached the owner's receiver, with the labels the owner needs
        assert stalled_alert["path"] == f"/owners/{scenario.owner}"
        assert stalled_alert["receiver"] == f"owner-{scenario.owner}"
        labels = stalled_alert["labels"]
        assert labels["owner"] == scenario.owner
        assert labels["team"] == scenario.team
        assert labels["feature"] == scenario.feature
        assert labels["rollout"] == scenario.rollout
        assert labels["wave"] == scenario.stalled_wave
        assert labels["cohort"] == scenario.stalled_cohort
        assert labels["cohorts"] == scenario.stalled_cohort
        assert labels["severity"] == "warning" and labels["category"] == "adoption"
        summary = stalled_alert["annotations"]["summary"]
        assert summary == (
            f'{scenario.feature} adoption stalled at 20% in wave "{scenario.stalled_wave}" (cohorts '
            f'{scenario.stalled_cohort}) of rollout "{scenario.rollout}" (target 80%)'
        )
        description = stalled_alert["annotations"]["description"]
        assert "stands at 20% of 40 exposed users" in description
        assert f"Owner: {scenario.owner} (team {scenario.team})" in description
        assert stalled_alert["annotations"]["runbook_url"].endswith("/adoption-rollout-stalled.md")
        assert stalled_alert["annotations"]["report_url"] == (
            f"http://127.0.0.1:9/report/#rollout-{scenario.rollout}"
        )
        # within its window: the stall window, the hold, the group wait, and a few scrape/eval cycles
        assert stalled_after <= scenario.window_s + scenario.hold_s + 4 + 20, stalled_after
        # the feature under its satisfaction floor: the owner heard it, and no wave may go on
        assert floor_alert is not None, f"no floor alert; received: {stack.received_alerts()}"
        assert floor_alert["path"] == f"/owners/{scenario.owner}"
        assert floor_alert["labels"]["feature"] == scenario.feature
        assert floor_alert["labels"]["rollout"] == scenario.rollout
        gate = await asyncio.to_thread(
            subprocess.run,
            [
                *(sys.executable, "-m", "adoptstream", "gate", str(tmp_path / "plan.yaml")),
                *("--rollout", scenario.rollout, "--wave", scenario.healthy_wave),
                *("--prometheus", stack.prometheus_url),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gate.returncode == 1 and "floor" in gate.stdout, (gate.stdout, gate.stderr)
        # only the owner heard about it; SRE got no adoption alert
        assert all(
            a["path"] != "/sre" or a["labels"].get("category") != "adoption" for a in stack.received_alerts()
        )
    finally:
        stop.set()
        if traffic is not None:
            await asyncio.wait_for(asyncio.shield(traffic), timeout=30)
        stack.stop()
