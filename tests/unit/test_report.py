"""The rollout report's words and page, from hand-made readings (tests/e2e/test_report_live.py reads a live
Prometheus): plain sentences, when a wave fell behind, escaping, nothing fetched."""

from __future__ import annotations

import datetime as dt
import re
import textwrap

from adoptstream.report.data import Alert, Progress, Report, RolloutReport, _wave_sentence, behind_since, when
from adoptstream.report.render import render_html
from adoptstream.rollout.plan import load_plan_text

NOW = dt.datetime(2027, 3, 18, 15, 30, tzinfo=dt.UTC).timestamp()  # a Thursday
PLAN = textwrap.dedent(
    """\
    rollouts:
      - name: expense-reports
        feature: expenses.reports-v2
        owner: workplace-po
        strategy: phased
        waves:
          - name: finance
            cohorts: [dept-finance]
            start: 2027-03-01T00:00:00Z
            duration: 30d
            target: 80%
          - name: sales-emea
            cohorts: ['<script>alert(1)</script> & "sales"']
            start: 2027-03-08T00:00:00Z
            duration: 30d
            target: 80%
    """
)


def test_moments_read_like_people_say_them() -> None:
    assert when(NOW - 3600, NOW) == "14:30 UTC today"
    assert when(NOW - 2 * 86400, NOW) == "Tuesday 15:30 UTC"
    assert when(NOW - 20 * 86400, NOW) == "26 February 2027"


def test_behind_since_is_the_start_of_the_latest_stretch_under_the_plan() -> None:
    plan = [(t, 0.5) for t in range(10)]
    actual = [(0, 0.5), (1, 0.3), (2, 0.5), (3, 0.3), (4, 0.35), (5, 0.3)]
    assert behind_since(actual, plan, 0.1) == (3, False)
    assert behind_since([(t, 0.1) for t in range(4, 8)], plan, 0.1) == (4, True)  # all the history there is
    assert behind_since([(t, 0.45) for t in range(4, 8)], plan, 0.1) is None  # within the tolerance


def wave_progress(
    wave_index: int, value: float, expected: float, actual: list[tuple[float, float]]
) -> Progress:
    wave = load_plan_text(PLAN).rollouts[0].waves[wave_index]
    title = f"Wave {wave_index + 1} ({wave.name})"
    p = Progress(title, wave.cohorts_label, wave.name, wave.target, wave.start, wave.deadline)
    p.value, p.expected, p.users, p.adopted = value, expected, 420, round(420 * value)
    p.actual = actual
    p.plan = [(t, expected) for t, _ in actual]
    return p


def test_a_wave_behind_plan_says_by_how_much_and_since_when() -> None:
    rollout = load_plan_text(PLAN).rollouts[0]
    tuesday = NOW - 2 * 86400
    p = wave_progress(1, 0.18, 0.30, [(tuesday - 3600, 0.25), (tuesday, 0.17), (NOW, 0.18)])
    p.plan = [(tuesday - 3600, 0.28), (tuesday, 0.29), (NOW, 0.30)]
    text = _wave_sentence(p, rollout.waves[1], None, NOW, 0.10)
    assert p.status == "behind plan"
    assert text.startswith("Wave 2 (sales-emea) is 12 points behind plan since Tuesday 15:30 UTC: 18% of 420")
    assert "the plan expects 30% by now" in text


def test_a_stalled_wave_names_its_stall_and_a_done_one_its_target() -> None:
    rollout = load_plan_text(PLAN).rollouts[0]
    stalled = Alert("AdoptionRolloutStalled", "firing", "finance", "stalled", NOW - 3600)
    p = wave_progress(0, 0.4, 0.5, [(NOW, 0.4)])
    assert _wave_sentence(p, rollout.waves[0], stalled, NOW, 0.1).startswith(
        "Wave 1 (finance) has stalled at 40% since 14:30 UTC today: less than 1 points gained in 3 days"
    )
    done = wave_progress(0, 0.85, 0.5, [(NOW, 0.85)])
    assert _wave_sentence(done, rollout.waves[0], None, NOW, 0.1) == (
        "Wave 1 (finance) reached its target: 85% of 420 exposed users use it (target 80%)."
    )


def test_page_escapes_what_it_shows_and_needs_nothing_from_anywhere() -> None:
    rollout = load_plan_text(PLAN).rollouts[0]
    progress = [wave_progress(1, 0.18, 0.30, [(NOW - 60, 0.2), (NOW, 0.18)])]
    progress[0].sentence = _wave_sentence(progress[0], rollout.waves[1], None, NOW, 0.1)
    report = Report(
        NOW, "http://127.0.0.1:9090", [RolloutReport(rollout, progress, [], rollout.waves[0].start, NOW)]
    )
    html = render_html(report)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;sales&quot;" in html
    assert not re.search(r'(src|href)="(?!#|data:)', html)
    assert 'id="rollout-expense-reports"' in html
    points = re.search(r'class="actual" data-series="adoption" points="([^"]+)"', html)
    assert points and len(points.group(1).split()) == 2
    assert "1 of 1 needs attention: Wave 2 (sales-emea)." in html
    assert 'http-equiv="refresh"' not in html and 'http-equiv="refresh"' in render_html(report, refresh_s=60)
