"""The rollout report for product owners, on the live stack, as a person sees it in headless Chromium.

`adoptstream report` (the real command) reads the live Prometheus and the three plans of the live stack
(tests/e2e/live.py) and writes one page; Chromium (Debian's, driven over DevTools) opens it from disk:
no console error, no request but the file itself, a chart with data points per wave and switch-over,
and the numbers Prometheus holds at the report's own time in the words. `--serve` serves the same page,
read anew on every request. Screenshots are kept (tmp dir, and .run/artifacts/ of the checkout).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adoptstream.rollout.plan import load_plans
from adoptstream_dev.browser import Browser, Page, chromium_missing
from adoptstream_dev.paths import REPO_ROOT
from adoptstream_dev.testing import free_port
from tests.e2e.conftest import needs_monitoring
from tests.e2e.live import LiveStack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    needs_monitoring,
    pytest.mark.skipif(chromium_missing(), reason="Debian's chromium is not installed"),
    pytest.mark.timeout(300),
]

ARTIFACTS = REPO_ROOT / ".run" / "artifacts"

# per chart: its series and how many points each draws
CHARTS_JS = """
Array.from(document.querySelectorAll("section.rollout")).map(s => ({
  id: s.id,
  text: s.innerText,
  charts: Array.from(s.querySelectorAll("svg")).map(svg => Object.fromEntries(
    Array.from(svg.querySelectorAll("polyline")).map(p => [p.dataset.series, p.points.numberOfItems]))),
  dots: s.querySelectorAll("svg circle").length,
  rows: Array.from(s.querySelectorAll("tr[data-wave]")).map(tr => [tr.dataset.wave,
    Array.from(tr.cells).map(c => c.innerText)]),
}))
"""


def report_command(stack: LiveStack, *args: str, **kwargs: Any) -> list[str]:
    plans = [str(p) for p in stack.plan_files]
    return [
        sys.executable,
        "-m",
        "adoptstream",
        "report",
        *plans,
        "--prometheus",
        stack.prometheus_url,
        *args,
    ]


def keep(page: Page, tmp_path: Path, name: str) -> Path:
    shot = page.screenshot(tmp_path / name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / name)
    print(f"\nscreenshot: {shot} (and {ARTIFACTS / name})")
    return shot


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def test_report_page_shows_the_live_rollouts(live_stack: LiveStack, browser: Browser, tmp_path: Path) -> None:
    live_stack.check()
    out = tmp_path / "report.html"
    began = time.monotonic()
    proc = subprocess.run(
        report_command(live_stack, "-o", str(out)), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    took = time.monotonic() - began
    html = out.read_text(encoding="utf-8")
    # self-contained: no script, no stylesheet or image to fetch, no remote URL anywhere but text
    assert "<script" not in html and "<img" not in html and 'rel="stylesheet"' not in html
    assert not re.search(r'(src|href)="(?!#|data:)', html), "the page refers to something outside itself"

    page = browser.open(out.as_uri())
    assert page.console_errors == []
    assert page.requests == [out.as_uri()], page.requests
    sections = {s["id"]: s for s in page.evaluate(CHARTS_JS)}
    plans = load_plans(live_stack.plan_files)
    assert set(sections) == {f"rollout-{r.name}" for r in plans.rollouts}

    # every wave and switch-over has a chart whose adoption and plan lines have points
    for rollout in plans.rollouts:
        section = sections[f"rollout-{rollout.name}"]
        expected_charts = len(rollout.waves) + (rollout.switchover is not None)
        assert len(section["charts"]) == expected_charts, section["charts"]
        for chart in section["charts"]:
            assert chart.get("plan", 0) >= 2, (rollout.name, chart)
            assert chart.get("adoption", 0) >= 2, (rollout.name, chart)
        assert section["dots"] == expected_charts

    # the numbers are Prometheus' own at the report's time
    at = float(page.evaluate("document.body.dataset.generatedAt"))
    exposed = {
        (s["metric"]["rollout"], s["metric"]["wave"]): int(float(s["value"][1]))
        for s in live_stack.api(
            "query", query="max by (rollout, wave) (adoptstream:rollout_wave_exposed:users)", time=at
        )["result"]
    }
    for rollout in plans.rollouts:
        rows = dict(sections[f"rollout-{rollout.name}"]["rows"])
        for wave in rollout.waves:
            cells = rows[wave.name]
            assert cells[3].replace(",", "") == str(exposed[(rollout.name, wave.name)]), (rollout.name, cells)

    # the words a product owner reads: the stalled wave, the healthy one, the alert firing
    sc = live_stack.scenario
    scenario = sections[f"rollout-{sc.rollout}"]["text"]
    assert f"Wave 2 ({sc.stalled_wave}) has stalled at 20% since" in scenario, scenario
    assert f"{sc.users_per_wave} exposed users" in scenario
    assert "firing" in scenario and "adoption stalled at 20%" in scenario
    assert "Needs attention" in scenario or "needs attention" in scenario
    generated = sections["rollout-ai-assist"]["text"]
    assert re.search(r"Wave [123] \((pilot|wave-1|wave-2)\) (is|has|reached)", generated), generated
    assert "median time to first use" in generated
    switch = sections["rollout-sharing"]["text"]
    assert "comments" in switch and "share-link" in switch and "users active on either feature" in switch
    shot = keep(page, tmp_path, "report.png")
    assert shot.stat().st_size > 20_000
    charts = sum(len(s["charts"]) for s in sections.values())
    print(f"report: {len(html):,} bytes in {took:.1f} s; {charts} charts")


def test_served_report_is_read_anew_on_every_request(
    live_stack: LiveStack, browser: Browser, tmp_path: Path
) -> None:
    port = free_port()
    server = subprocess.Popen(
        report_command(live_stack, "--serve", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "report server did not answer in 30 s"
            time.sleep(0.1)  # polling cadence for the server to listen
        page = browser.open(url)
        assert page.console_errors == []
        assert page.requests == [url], page.requests
        first = float(page.evaluate("document.body.dataset.generatedAt"))
        assert page.evaluate("document.querySelectorAll('section.rollout').length") == 3
        keep(page, tmp_path, "report-served.png")
        again = browser.open(url)
        assert float(again.evaluate("document.body.dataset.generatedAt")) > first  # read anew, not cached
    finally:
        server.terminate()
        server.wait(timeout=10)
