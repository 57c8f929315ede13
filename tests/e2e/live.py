"""One live stack for the tests that read what people see (dashboards, rollout report).

Two real workers fed by the generator (30 days of history, then live traffic with every v2 event) and
by the compressed stall scenario (the second joins after Prometheus has seen the first: a rebalance
the Operations board must show), and Prometheus with the project's static rules plus the rules rendered
from three rollout plans (the scenario's stalled/healthy waves, a phased rollout of a generated feature,
a parallel switch-over), built by `scenario_stack` like the demo's. Started once per session: it waits
until every rollout series is recorded, the stalled wave's alert fires and rates have a few scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from adoptstream_dev.generate import TrafficGenerator, run_live
from adoptstream_dev.monitoring_stack import MonitoringStack
from adoptstream_dev.scenario import StallScenario, scenario_stack
from adoptstream_dev.testing import WorkerProcess

SEED = 20260101
USERS = 1500
BACKFILL = 20_000
LIVE_RATE = 150  # events/s after the backfill
REPORT_BASE_URL = "http://127.0.0.1:8089/report"


def generated_plans(now_s: float) -> dict[str, Any]:
    """Rollouts of the generator's own features, dated like its history (which ends now)."""

    def iso(days_ago: float) -> str:
        moment = dt.datetime.fromtimestamp(now_s - days_ago * 86400, dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "owners": {"assist-po": {"team": "ai"}, "sharing-po": {"team": "collaboration"}},
        "rollouts": [
            {
                # the generator opens ai/assist to pilot, wave-1, wave-2 at 0, 30 and 65 % of its 30 days
                "name": "ai-assist",
                "feature": "ai/assist",
                "owner": "assist-po",
                "strategy": "phased",
                "description": "The AI assistant, wave by wave.",
                "target": 0.5,
                "duration": "30d",
                "waves": [
                    {"name": "pilot", "cohorts": ["pilot"], "start": iso(30)},
                    {"name": "wave-1", "cohorts": ["wave-1"], "start": iso(21)},
                    {"name": "wave-2", "cohorts": ["wave-2"], "start": iso(10.5)},
                ],
            },
            {
                "name": "sharing",
                "feature": "share-link",
                "owner": "sharing-po",
                "strategy": "parallel",
                "old_feature": "comments",
                "start": iso(20),
                "switchover": {"window": "7d", "target": 0.9, "duration": "40d"},
            },
        ],
    }


@dataclass
class LiveStack:
    """The running stack: `prometheus` (a MonitoringStack), `worker`, the scenario and the plans."""

    workdir: Path
    bootstrap: str
    topic: str
    scenario: StallScenario = field(default_factory=lambda: StallScenario(window_s=20, hold_s=2))
    started_at: float = 0.0
    workers: list[WorkerProcess] = field(default_factory=list)
    prometheus: MonitoringStack | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _traffic_error: BaseException | None = None
    published: int = 0

    @property
    def prometheus_url(self) -> str:
        assert self.prometheus is not None
        return self.prometheus.prometheus_url

    @property
    def plan_files(self) -> list[Path]:
        assert self.prometheus is not None
        return list(self.prometheus.plan_files)

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self, ready_timeout_s: float = 150) -> LiveStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        extra = self.workdir / "generated-rollouts.yaml"
        extra.write_text(yaml.safe_dump(generated_plans(now), sort_keys=False), encoding="utf-8")
        app_id = f"live-{self.topic}"
        self.workers = [
            WorkerProcess(self.bootstrap, self.topic, self.workdir / f"worker-{i}", app_id=app_id)
            for i in (1, 2)
        ]
        stack = scenario_stack(
            self.scenario,
            self.workdir / "stack",
            [w.target for w in self.workers],
            extra_plans=[extra],
            report_base_url=REPORT_BASE_URL,
        )
        self.prometheus = stack
        self.started_at = now
        stack.start()
        try:
            first, second = self.workers
            first.start()
            first.wait_ready()
            seen = f'adoptstream_rebalances_total{{instance="{first.target}"}}'
            self._wait_for({"first worker's assignment scraped": seen}, 60)
            second.start()  # both consumer groups rebalance: Prometheus sees the counters move
            second.wait_ready()
            self._thread = threading.Thread(target=self._traffic, name="live-traffic", daemon=True)
            self._thread.start()
            self._wait_until_live(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for worker in self.workers:
            worker.stop()
        if self.prometheus is not None:
            self.prometheus.stop()

    def _traffic(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:  # reported by check()
            self._traffic_error = exc

    async def _publish(self) -> None:
        from adoptstream.publish import Publisher
        from adoptstream.runtime.config import KafkaSettings

        gen = TrafficGenerator(SEED, USERS, invalid_ratio=0.005, feedback_ratio=0.05)
        kafka = KafkaSettings(broker=f"kafka://{self.bootstrap}")
        publisher = Publisher(kafka, self.topic, client_id="live-stack")
        await publisher.start()
        stop = asyncio.Event()
        try:
            for line in gen.events(BACKFILL):
                publisher.add(line)
            await publisher.flush()
            live = asyncio.create_task(run_live(gen, publisher, LIVE_RATE, stop))
            began = time.monotonic()
            while not self._stop.is_set():
                for event in self.scenario.events_due(time.monotonic() - began, time.time_ns() // 1_000_000):
                    publisher.add(orjson.dumps(event))
                await publisher.send_pending()
                self.published = publisher.stats.sent
                await asyncio.sleep(1.0)  # the scenario's own pace: it decides what is due each second
            stop.set()
            await live
            await publisher.flush()
        finally:
            await publisher.stop()

    def check(self) -> None:
        """Fails when a worker or the traffic died."""
        for worker in self.workers:
            if worker.proc is not None:
                worker.assert_alive()
        assert self._traffic_error is None, f"traffic stopped: {self._traffic_error!r}"

    # -- Prometheus -----------------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path> with ``params`` (lists repeat the parameter); the ``data`` of the answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.prometheus_url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise AssertionError(f"{path} {params}: {exc.code} {body.get('error')}") from None
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def _wait_until_live(self, timeout_s: float) -> None:
        """Until every rollout series is recorded, the stalled wave's alert fires, and rates have data."""
        sc = self.scenario
        needed = {
            "stalled wave recorded": f'adoptstream:rollout_wave_adoption:ratio{{wave="{sc.stalled_wave}"}}',
            "generated waves recorded": (
                'count(adoptstream:rollout_wave_adoption:ratio{rollout="ai-assist"}) == 3'
            ),
            "switch-over recorded": 'adoptstream:rollout_switchover:ratio{rollout="sharing"}',
            "stall alert firing": f'ALERTS{{alertname="AdoptionRolloutStalled", alertstate="firing", '
            f'rollout="{sc.rollout}"}}',
            "backfill processed": f"sum(adoptstream_events_total) > {BACKFILL * 0.9:.0f}",
            "rates over 20 s of scrapes": "sum(rate(adoptstream_processed_records_total[20s])) > 0",
            "dead letters counted": "sum(adoptstream_dead_letters_total) > 0",
            # every rate and increase panel ($__rate_interval, 2m annotations) has samples to work with
            "30 s of scrapes": 'count_over_time(up{job="adoptstream"}[30s]) >= 25',
        }
        self._wait_for(needed, timeout_s)

    def _wait_for(self, needed: dict[str, str], timeout_s: float) -> None:
        """Polls until every expression of ``needed`` returns data (checking the processes meanwhile)."""
        deadline = time.monotonic() + timeout_s
        missing = dict(needed)
        while missing:
            self.check()
            for what, expr in list(missing.items()):
                with contextlib.suppress(AssertionError, OSError):
                    if self.query(expr):
                        del missing[what]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"live stack not ready after {timeout_s:.0f} s, still waiting for: {sorted(missing)}\n"
                    + "".join(f"worker log:\n{w.log_tail()}\n" for w in self.workers)
                )
            time.sleep(1)  # polling cadence; the deadline above bounds the wait
