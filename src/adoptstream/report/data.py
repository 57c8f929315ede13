"""What the rollout report says, read from Prometheus and the rollout plans (nothing else).

Per rollout: each wave's adoption now and over time against its plan (the plan line is the rules' own
curve, evaluated by Prometheus over any range), the exposed and adopted users, the feature's time to
first use and stickiness, the alerts Prometheus holds for it, and one plain sentence per wave.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Any

from adoptstream.rollout.durations import humanize_duration
from adoptstream.rollout.plan import PlanSet, Rollout, Switchover, Wave
from adoptstream.rollout.prometheus import Prometheus, PrometheusError, Series
from adoptstream.rollout.promql import selector
from adoptstream.rollout.rules import (
    SWITCHOVER,
    SWITCHOVER_ACTIVE,
    WAVE_ADOPTED,
    WAVE_ADOPTION,
    WAVE_EXPOSED,
    expected_ratio_expr,
    report_anchor,
)

Points = list[tuple[float, float]]
LOOKBACK_S = 30 * 86400  # the longest history a chart asks for (Prometheus keeps 15 days by default)
HISTORY_POINTS = 240
TTFU_BUCKETS = "adoptstream_time_to_first_use_seconds_bucket"

ATTENTION = ("stalled", "behind plan")


@dataclass
class Alert:
    """An alert Prometheus holds for the rollout."""

    name: str
    state: str  # pending | firing
    wave: str
    summary: str
    since: float | None


@dataclass
class Progress:
    """One wave (or a switch-over): where it stands, its history and its plan, in words."""

    title: str  # "Wave 2 (berlin)" or "Switch-over"
    who: str  # the cohorts, or the two features
    key: str  # the wave's name, "switchover" for a switch-over (as the alerts' wave label)
    target: float
    start: float
    deadline: float
    value: float | None = None  # adoption ratio (switch-over: the new feature's share)
    expected: float | None = None
    users: int | None = None  # exposed users (switch-over: users of either feature)
    adopted: int | None = None
    actual: Points = field(default_factory=list)
    plan: Points = field(default_factory=list)
    status: str = "on track"  # not started | no users yet | reached target | stalled | behind plan | ...
    sentence: str = ""

    @property
    def gap_points(self) -> float | None:
        if self.value is None or self.expected is None:
            return None
        return (self.value - self.expected) * 100


@dataclass
class RolloutReport:
    rollout: Rollout
    progress: list[Progress]
    alerts: list[Alert]
    chart_start: float
    chart_end: float
    ttfu_p50_s: float | None = None
    ttfu_p90_s: float | None = None
    stickiness: float | None = None
    active_30d: int | None = None

    @property
    def anchor(self) -> str:
        return report_anchor(self.rollout.name)

    @property
    def headline(self) -> str:
        needing = [p for p in self.progress if p.status in ATTENTION]
        firing = sum(1 for a in self.alerts if a.state == "firing")
        parts = []
        if needing:
            names = ", ".join(p.title for p in needing)
            parts.append(f"{len(needing)} of {len(self.progress)} needs attention: {names}")
        elif all(p.status == "reached target" for p in self.progress):
            parts.append("every wave reached its target")
        else:
            parts.append("on track")
        if firing:
            parts.append(f"{firing} alert{'s' if firing != 1 else ''} firing")
        text = "; ".join(parts)
        return text[0].upper() + text[1:] + "."


@dataclass
class Report:
    generated_at: float
    prometheus_url: str
    rollouts: list[RolloutReport]
    problems: list[str] = field(default_factory=list)  # what could not be read (the page says so)


# -- words -----------------------------------------------------------------------------------------


def pct(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio * 100:.0f}%"


def when(ts: float, now: float) -> str:
    """A moment for people: ``14:02 UTC today``, ``Tuesday 14:02 UTC``, ``3 March 2027``."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if moment.date() == today:
        return f"{moment:%H:%M} UTC today"
    if 0 < (today - moment.date()).days < 7:
        return f"{moment:%A %H:%M} UTC"
    return f"{moment.day} {moment:%B %Y}"


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= unit:
            return f"{seconds / unit:.1f} {name}".replace(".0 ", " ")
    return f"{seconds:.0f} s"


def behind_since(actual: Points, plan: Points, tolerance: float) -> tuple[float, bool] | None:
    """When adoption last fell more than ``tolerance`` under the plan and stayed there: (time, whether
    it was behind for all the history there is, so the true start may be earlier); None if not behind."""
    expected = dict(plan)
    since: float | None = None
    for t, value in actual:
        if t not in expected:
            continue
        behind = value < expected[t] - tolerance
        since = (since if since is not None else t) if behind else None
    if since is None:
        return None
    return since, since == next((t for t, _ in actual if t in expected), None)


def _wave_sentence(p: Progress, wave: Wave, stalled: Alert | None, now: float, tolerance: float) -> str:
    target = f"target {pct(wave.target)} by {when(wave.deadline, now)}"
    if now < wave.start:
        p.status = "not started"
        return f"{p.title} starts {when(wave.start, now)} ({target})."
    if not p.users:
        p.status = "no users yet"
        return f"{p.title}: nobody in {p.who} has been given the feature yet ({target})."
    share = f"{pct(p.value)} of {p.users:,} exposed users use it"
    if p.value is not None and p.value >= wave.target:
        p.status = "reached target"
        return f"{p.title} reached its target: {share} (target {pct(wave.target)})."
    if stalled is not None:
        p.status = "stalled"
        since = f" since {when(stalled.since, now)}" if stalled.since else ""
        window = humanize_duration(wave.stall.window_s)
        return (
            f"{p.title} has stalled at {pct(p.value)}{since}: less than {wave.stall.min_progress * 100:g} "
            f"points gained in {window} ({p.users:,} exposed users, {target})."
        )
    gap = p.gap_points
    if gap is not None and gap < -tolerance * 100:
        p.status = "behind plan"
        found = behind_since(p.actual, p.plan, tolerance)
        since = ""
        if found is not None:
            since = f" since {'at least ' if found[1] else ''}{when(found[0], now)}"
        return (
            f"{p.title} is {-gap:.0f} points behind plan{since}: {share}, the plan expects "
            f"{pct(p.expected)} by now ({target})."
        )
    if gap is not None and gap > tolerance * 100:
        p.status = "ahead of plan"
        return (
            f"{p.title} is {gap:.0f} points ahead of plan: {share}, the plan expects {pct(p.expected)} now."
        )
    p.status = "on track"
    return f"{p.title} is on track: {share}, the plan expects {pct(p.expected)} by now ({target})."


def _switch_sentence(p: Progress, so: Switchover, rollout: Rollout, now: float) -> str:
    target = f"{pct(so.target)} by {when(so.deadline, now)}"
    if now < so.start:
        p.status = "not started"
        return f"The switch-over from {so.old_feature} starts {when(so.start, now)} (target {target})."
    if not p.users:
        p.status = "no users yet"
        return f"Nobody used {so.old_feature} or {rollout.feature} in the last {so.window} yet."
    share = (
        f"{pct(p.value)} of the {p.users:,} users active on either feature in the last {so.window} use "
        f"{rollout.feature} rather than {so.old_feature}"
    )
    if p.value is not None and p.value >= so.target:
        p.status = "reached target"
        return f"The switch-over reached its target: {share}."
    gap = p.gap_points
    tolerance = so.behind_plan.tolerance
    if gap is not None and gap < -tolerance * 100:
        p.status = "behind plan"
        found = behind_since(p.actual, p.plan, tolerance)
        since = f" since {'at least ' if found[1] else ''}{when(found[0], now)}" if found else ""
        return (
            f"The switch-over is {-gap:.0f} points behind plan{since}: {share}; the plan expects "
            f"{pct(p.expected)} by now (target {target})."
        )
    p.status = "on track"
    return (
        f"The switch-over is on track: {share}; the plan expects {pct(p.expected)} by now (target {target})."
    )


# -- reading ---------------------------------------------------------------------------------------


def _by(series: list[Series], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.get(k, "") for k in labels): s.last for s in series if s.last is not None}


def _one(client: Prometheus, expr: str, at: float) -> float | None:
    result = client.instant(expr, at)
    return result[0].last if result else None


def _chart_range(starts: list[float], deadlines: list[float], now: float) -> tuple[float, float]:
    """From the first start to the last deadline, or (for long plans) to as far ahead as it has run."""
    start = min(starts)
    return start, max(now, min(max(deadlines), now + (now - start)))


def _step(start: float, end: float, points: int) -> float:
    """Whole seconds: the range's points then fall exactly where they are computed (no rounding drift)."""
    return float(max(1, math.ceil((end - start) / points)))


def read_rollout(
    client: Prometheus, rollout: Rollout, now: float, alerts: list[dict[str, Any]]
) -> RolloutReport:
    plans: list[Wave | Switchover] = list(rollout.waves)
    if rollout.switchover is not None:
        plans.append(rollout.switchover)
    chart_start, chart_end = _chart_range([p.start for p in plans], [p.deadline for p in plans], now)
    data_start = max(chart_start, now - LOOKBACK_S)
    mine = [a for a in alerts if a.get("labels", {}).get("rollout") == rollout.name]
    held = [
        Alert(
            name=a["labels"].get("alertname", ""),
            state=a.get("state", ""),
            wave=a["labels"].get("wave", ""),
            summary=a.get("annotations", {}).get("summary", ""),
            since=_timestamp(a.get("activeAt")),
        )
        for a in mine
    ]
    me = {"rollout": rollout.name}
    ratios = _by(client.instant(f"max by (wave) ({selector(WAVE_ADOPTION, me)})", now), "wave")
    exposed = _by(client.instant(f"max by (wave) ({selector(WAVE_EXPOSED, me)})", now), "wave")
    adopted = _by(client.instant(f"max by (wave) ({selector(WAVE_ADOPTED, me)})", now), "wave")
    waves, data_start, data_step = _history(
        client, f"max by (wave) ({selector(WAVE_ADOPTION, me)})", data_start, now
    )
    history = {s.labels.get("wave", ""): s.points for s in waves}
    progress: list[Progress] = []
    for number, wave in enumerate(rollout.waves, start=1):
        title = f"Wave {number} ({wave.name})" if len(rollout.waves) > 1 else f"The rollout ({wave.name})"
        p = Progress(title, wave.cohorts_label, wave.name, wave.target, wave.start, wave.deadline)
        key = (wave.name,)
        p.value, p.users = ratios.get(key), _int(exposed.get(key))
        p.adopted = _int(adopted.get(key))
        p.expected = _one(client, expected_ratio_expr(wave), now)
        p.actual = history.get(wave.name, [])
        p.plan = _plan_line(client, wave, chart_start, chart_end, data_start, now, data_step)
        stalled = next(
            (
                a
                for a in held
                if a.wave == wave.name and a.state == "firing" and a.name == "AdoptionRolloutStalled"
            ),
            None,
        )
        p.sentence = _wave_sentence(p, wave, stalled, now, wave.behind_plan.tolerance)
        progress.append(p)
    if rollout.switchover is not None:
        so = rollout.switchover
        who = f"{so.old_feature} → {rollout.feature}"
        p = Progress("Switch-over", who, "switchover", so.target, so.start, so.deadline)
        p.value = _one(client, f"max({selector(SWITCHOVER, me)})", now)
        p.users = _int(_one(client, f"max({selector(SWITCHOVER_ACTIVE, me)})", now))
        series, start, step = _history(client, f"max({selector(SWITCHOVER, me)})", data_start, now)
        p.actual = series[0].points if series else []
        p.expected = _one(client, expected_ratio_expr(so), now)
        p.plan = _plan_line(client, so, chart_start, chart_end, start, now, step)
        p.sentence = _switch_sentence(p, so, rollout, now)
        progress.append(p)
    feature = {"feature": rollout.feature}
    report = RolloutReport(rollout, progress, held, chart_start, chart_end)
    ttfu = f"sum by (le) ({selector(TTFU_BUCKETS, feature)})"
    report.ttfu_p50_s = _one(client, f"histogram_quantile(0.5, {ttfu})", now)
    report.ttfu_p90_s = _one(client, f"histogram_quantile(0.9, {ttfu})", now)
    report.stickiness = _one(client, selector("adoptstream:stickiness:ratio", feature), now)
    active = {**feature, "window": "30d"}
    report.active_30d = _int(_one(client, f"sum({selector('adoptstream_active_users', active)})", now))
    return report


def _history(client: Prometheus, expr: str, start: float, end: float) -> tuple[list[Series], float, float]:
    """A range query of ``expr`` with about HISTORY_POINTS points where Prometheus has data: a plan may
    run for months while Prometheus has kept (or recorded) its series for hours, so the range shrinks to
    the data found, in a few coarse-to-fine steps. Returns the series and the (start, step) used."""
    while True:
        step = _step(start, end, HISTORY_POINTS)
        start = end - math.ceil((end - start) / step) * step  # the last point falls on `end` itself
        series = client.range(expr, start, end, step)
        first = min((s.points[0][0] for s in series if s.points), default=None)
        most = max((len(s.points) for s in series), default=0)
        if first is None or step <= 1 or most >= HISTORY_POINTS // 8 or first - step <= start:
            return series, start, step
        start = first - step


def _plan_line(
    client: Prometheus,
    plan: Wave | Switchover,
    chart_start: float,
    chart_end: float,
    data_start: float,
    now: float,
    data_step: float,
) -> Points:
    """The plan's expected ratio over the whole chart, plus at the history's own times (for comparing)."""
    expr = expected_ratio_expr(plan)
    points: dict[float, float] = {}
    for start, end, step in (
        (chart_start, chart_end, _step(chart_start, chart_end, 120)),
        (data_start, now, data_step),
    ):
        for series in client.range(expr, start, end, step):
            points.update(series.points)
    return sorted(points.items())


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_report(client: Prometheus, plans: PlanSet, now: float | None = None) -> Report:
    """Everything the page shows; a rollout Prometheus cannot answer for is named in ``problems``."""
    now = time.time() if now is None else now
    report = Report(now, client.base_url, [])
    try:
        alerts = client.alerts()
    except PrometheusError as exc:
        report.problems.append(str(exc))
        alerts = []
    for rollout in plans.rollouts:
        try:
            report.rollouts.append(read_rollout(client, rollout, now, alerts))
        except PrometheusError as exc:
            report.problems.append(f"{rollout.name}: {exc}")
    return report
