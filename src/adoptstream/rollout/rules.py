"""Prometheus rules generated from rollout plans: plan facts as recorded series, plan-specific alerts.

Every wave gets recording rules that carry its plan (target, start, deadline, the expected curve), its
live adoption summed over all workers, and the plan's judgement of it (stalled, behind plan, the gate's
verdict), with ``rollout, feature, wave, owner, team, strategy, cohorts`` labels. Alerts, the ``gate``
command and the generated Argo Rollouts / Flagger templates all read those series, so the judgement is
written once, here. docs/operations.md lists every series and alert.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import yaml

from adoptstream.rollout.durations import format_duration, humanize_duration, parse_duration
from adoptstream.rollout.plan import ALL_COHORTS, PlanSet, Rollout, Satisfaction, Switchover, Wave
from adoptstream.rollout.promql import number, one_of, selector

DEFAULT_RUNBOOK_BASE_URL = "https://adoptstream.example.com/docs/runbooks"
DEFAULT_DASHBOARD_BASE_URL = "https://grafana.example.com/d"

# Recorded series (names are an interface: dashboards are built on them).
WAVE_EXPOSED = "adoptstream:rollout_wave_exposed:users"
WAVE_ADOPTED = "adoptstream:rollout_wave_adopted:users"
WAVE_ADOPTION = "adoptstream:rollout_wave_adoption:ratio"
WAVE_TARGET = "adoptstream:rollout_wave_target:ratio"
WAVE_EXPECTED = "adoptstream:rollout_wave_expected:ratio"
WAVE_START = "adoptstream:rollout_wave_start:timestamp_seconds"
WAVE_DEADLINE = "adoptstream:rollout_wave_deadline:timestamp_seconds"
WAVE_GAIN = "adoptstream:rollout_wave_gain:ratio"
WAVE_JUDGED = "adoptstream:rollout_wave_judged:bool"
WAVE_STALLED = "adoptstream:rollout_wave_stalled:bool"
WAVE_BEHIND = "adoptstream:rollout_wave_behind_plan:bool"
WAVE_GATE = "adoptstream:rollout_wave_gate:verdict"
SATISFACTION = "adoptstream:rollout_satisfaction:score"
SATISFACTION_FLOOR = "adoptstream:rollout_satisfaction_floor:score"
SATISFACTION_ANSWERS = "adoptstream:rollout_satisfaction_answers:users"
SATISFACTION_BELOW = "adoptstream:rollout_satisfaction_below_floor:bool"
SWITCHOVER = "adoptstream:rollout_switchover:ratio"
SWITCHOVER_ACTIVE = "adoptstream:rollout_switchover_active:users"
SWITCHOVER_TARGET = "adoptstream:rollout_switchover_target:ratio"
SWITCHOVER_EXPECTED = "adoptstream:rollout_switchover_expected:ratio"
SWITCHOVER_START = "adoptstream:rollout_switchover_start:timestamp_seconds"
SWITCHOVER_DEADLINE = "adoptstream:rollout_switchover_deadline:timestamp_seconds"
FEATURE_OWNER = "adoptstream:feature_owner:info"

# The gate's verdicts, as WAVE_GATE records them (and as `adoptstream gate` exits).
GATE_PASS, GATE_FAIL, GATE_UNKNOWN = 0, 1, 2

# The static rules' satisfaction KPI behind each scale a plan can set a floor on.
SATISFACTION_KPIS = {"nps": "adoptstream:nps:score", "csat": "adoptstream:csat:ratio"}

# Alert names and their runbooks (docs/runbooks/<file>).
RUNBOOKS: dict[str, str] = {
    "AdoptionRolloutStalled": "adoption-rollout-stalled.md",
    "AdoptionBehindPlan": "adoption-behind-plan.md",
    "AdoptionSwitchoverStalled": "adoption-switchover-stalled.md",
    "AdoptionSwitchoverBehindPlan": "adoption-behind-plan.md",
    "AdoptionSatisfactionBelowFloor": "adoption-satisfaction-below-floor.md",
}


@dataclass(frozen=True)
class RenderOptions:
    """Where alerts link to: the runbooks (docs/runbooks/ published somewhere), the dashboards and, when
    one is served (`adoptstream report --serve`), the rollout report (annotation ``report_url``)."""

    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
    dashboard_base_url: str = DEFAULT_DASHBOARD_BASE_URL
    report_base_url: str | None = None

    def report(self, rollout: str) -> dict[str, str]:
        """The ``report_url`` annotation of a rollout's alerts (none without a report base URL)."""
        if not self.report_base_url:
            return {}
        return {"report_url": f"{self.report_base_url.rstrip('/')}/#{report_anchor(rollout)}"}

    def runbook(self, alertname: str) -> str:
        return f"{self.runbook_base_url.rstrip('/')}/{RUNBOOKS[alertname]}"

    def dashboard(self, name: str, **params: str) -> str:
        query = "&".join(f"var-{k}={quote_plus(v)}" for k, v in params.items())
        return f"{self.dashboard_base_url.rstrip('/')}/{name}" + (f"?{query}" if query else "")


def report_anchor(rollout: str) -> str:
    """The id of a rollout's section in the rollout report (``adoptstream report``)."""
    return "rollout-" + quote_plus(rollout)


def template_literal(text: str) -> str:
    """``text`` for a templated field (alert labels and annotations): as is, or quoted if it has ``{{``."""
    if "{{" not in text and "}}" not in text:
        return text
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _points(ratio: float) -> str:
    value = f"{ratio * 100:g}"
    return f"{value} percentage point{'' if value == '1' else 's'}"


_CURVE_TEXT = {"linear": "linear curve", "s-curve": "S-curve", "step": "step curve (all due at the deadline)"}


def _curve(curve: str, start: float, deadline: float, target: float) -> str:
    """PromQL for the plan's expected ratio now: 0 before start, ``target`` from the deadline on."""
    elapsed = f"clamp(vector((time() - {number(start)}) / {number(deadline - start)}), 0, 1)"
    if curve == "step":
        return f"{number(target)} * floor({elapsed})"
    if curve == "s-curve":  # smoothstep: slow start, fast middle, slow finish
        return f"{number(target)} * (3 * {elapsed} ^ 2 - 2 * {elapsed} ^ 3)"
    return f"{number(target)} * {elapsed}"


def expected_ratio_expr(plan: Wave | Switchover) -> str:
    """PromQL for the ratio a wave's (or switch-over's) plan expects at the evaluation time: what its
    ``..._expected:ratio`` rule records, usable over any range (the rollout report draws the plan line)."""
    return _curve(plan.curve, plan.start, plan.deadline, plan.target)


def _started(start: float) -> str:
    return f"on() (vector(time()) >= {number(start)})"


def wave_labels(rollout: Rollout, wave: Wave) -> dict[str, str]:
    """The labels every recorded series of a wave carries."""
    return {
        "rollout": rollout.name,
        "feature": rollout.feature,
        "wave": wave.name,
        "cohorts": wave.cohorts_label,
        "owner": rollout.owner,
        "team": rollout.team,
        "strategy": rollout.strategy,
    }


def switchover_labels(rollout: Rollout, switchover: Switchover) -> dict[str, str]:
    """The labels every recorded series of a parallel rollout's switch-over carries."""
    return {
        "rollout": rollout.name,
        "feature": rollout.feature,
        "old_feature": switchover.old_feature,
        "owner": rollout.owner,
        "team": rollout.team,
        "strategy": rollout.strategy,
    }


def _record(name: str, expr: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"record": name, "expr": expr, "labels": dict(labels)}


def _wave_records(rollout: Rollout, wave: Wave) -> list[dict[str, Any]]:
    labels = wave_labels(rollout, wave)
    match = {"feature": rollout.feature}
    regex = {"cohort": one_of(wave.cohorts)} if wave.cohorts else {}
    exposed = f"sum({selector('adoptstream_exposed_users', match, regex)})"
    adopted = f"(sum({selector('adoptstream_adopted_users', match, regex)}) or vector(0))"
    me = {"rollout": rollout.name, "wave": wave.name}
    ratio, expected = selector(WAVE_ADOPTION, me), selector(WAVE_EXPECTED, me)
    gain, stall = selector(WAVE_GAIN, me), wave.stall
    judged, stalled, behind = selector(WAVE_JUDGED, me), selector(WAVE_STALLED, me), selector(WAVE_BEHIND, me)
    return [
        _record(WAVE_EXPOSED, exposed, labels),
        _record(WAVE_ADOPTED, f"{adopted} and on() {exposed}", labels),
        _record(WAVE_ADOPTION, f"{adopted}\n/\n({exposed} > 0)", labels),
        _record(WAVE_TARGET, f"vector({number(wave.target)})", labels),
        _record(WAVE_START, f"vector({number(wave.start)})", labels),
        _record(WAVE_DEADLINE, f"vector({number(wave.deadline)})", labels),
        _record(WAVE_EXPECTED, _curve(wave.curve, wave.start, wave.deadline, wave.target), labels),
        # adoption gained over the stall window (absent until Prometheus has a window of history)
        _record(WAVE_GAIN, f"{ratio} - {ratio} offset {format_duration(stall.window_s)}", labels),
        # 1 once the wave can be judged: started, with enough exposed users
        _record(
            WAVE_JUDGED,
            f"({selector(WAVE_EXPOSED, me)} >= bool {stall.min_exposed})"
            f" * (time() >= bool {number(wave.start)})",
            labels,
        ),
        # 1: below target and gained less than min_progress over the window; 0: not stalled (at target,
        # or progressing); absent: cannot tell (below target, less than a window of history)
        _record(
            WAVE_STALLED,
            f"({ratio} < bool {number(wave.target)}) * ({gain} < bool {number(stall.min_progress)})\n"
            f"or\n0 * ({ratio} >= {number(wave.target)})",
            labels,
        ),
        # 1: more than the tolerance under the plan's curve now
        _record(WAVE_BEHIND, f"{ratio} < bool {expected} - {number(wave.behind_plan.tolerance)}", labels),
        _record(WAVE_GATE, _gate(rollout, judged, stalled, behind), labels),
    ]


def _gate(rollout: Rollout, judged: str, stalled: str, behind: str) -> str:
    """The gate's verdict for a wave: GATE_FAIL, GATE_PASS or GATE_UNKNOWN (PromQL, label-free)."""
    fail = f"max({judged} == 1 and ({stalled} == 1 or {behind} == 1))"
    passed = f"0 * max({judged} == 1 and {stalled} == 0 and {behind} == 0)"
    floor = rollout.satisfaction
    lines = [f"# {GATE_FAIL}: judged, and stalled or behind plan", fail]
    if floor is not None:
        below = selector(SATISFACTION_BELOW, {"rollout": rollout.name})
        lines += [f"# {GATE_FAIL}: the feature is below a satisfaction floor", f"or on() max({below} == 1)"]
        passed += f"\n  and on() count({below} == 0) == {len(floor.floors)}"
        lines += [f"# {GATE_PASS}: judged, neither stalled nor behind, every satisfaction floor met"]
    else:
        lines += [f"# {GATE_PASS}: judged, neither stalled nor behind plan"]
    lines += [f"or on() {passed}", f"# {GATE_UNKNOWN}: cannot tell yet", f"or on() vector({GATE_UNKNOWN})"]
    return "\n".join(lines)


def _wave_alerts(rollout: Rollout, wave: Wave, options: RenderOptions) -> list[dict[str, Any]]:
    me = {"rollout": rollout.name, "wave": wave.name}
    ratio, judged = selector(WAVE_ADOPTION, me), selector(WAVE_JUDGED, me)
    stall, behind = wave.stall, wave.behind_plan
    dashboard = options.dashboard("adoptstream-rollouts", rollout=rollout.name, wave=wave.name)
    # Label values are templates too: cohorts are copied through $labels, the wave name is quoted.
    # rollout and wave are literal so every alert rule differs (promtool's duplicate-rule lint).
    extra = {
        "category": "adoption",
        "rollout": rollout.name,
        "wave": template_literal(wave.name),
        "cohort": "{{ $labels.cohorts }}",
    }
    exposed_now = (
        '{{ with printf "' + WAVE_EXPOSED + '{rollout=%q,wave=%q}" $labels.rollout $labels.wave | query }}'
        "{{ . | first | value | humanize }}{{ end }}"
    )
    expected_now = (
        '{{ with printf "' + WAVE_EXPECTED + '{rollout=%q,wave=%q}" $labels.rollout $labels.wave | query }}'
        "{{ . | first | value | humanizePercentage }}{{ end }}"
    )
    who = 'wave "{{ $labels.wave }}" (cohorts {{ $labels.cohorts }}) of rollout "{{ $labels.rollout }}"'
    stalled = {
        "alert": "AdoptionRolloutStalled",
        "expr": f"{ratio}\nand {selector(WAVE_STALLED, me)} == 1\nand {judged} == 1",
        "for": format_duration(stall.hold_s),
        "labels": {"severity": "warning", **extra},
        "annotations": {
            "summary": (
                "{{ $labels.feature }} adoption stalled at {{ $value | humanizePercentage }} in "
                + who
                + f" (target {_pct(wave.target)})"
            ),
            "description": (
                "Adoption of {{ $labels.feature }} in " + who + " has gained less than "
                f"{_points(stall.min_progress)} in the last {humanize_duration(stall.window_s)} and stands "
                "at {{ $value | humanizePercentage }} of " + exposed_now + " exposed users, below the target "
                f"of {_pct(wave.target)} due {_iso(wave.deadline)}. The wave started {_iso(wave.start)}. "
                "Owner: {{ $labels.owner }} (team {{ $labels.team }})."
            ),
            "runbook_url": options.runbook("AdoptionRolloutStalled"),
            "dashboard_url": dashboard,
            **options.report(rollout.name),
        },
    }
    behind_plan = {
        "alert": "AdoptionBehindPlan",
        "expr": f"{ratio}\nand {selector(WAVE_BEHIND, me)} == 1\nand {judged} == 1",
        "for": format_duration(behind.hold_s(wave.duration_s, stall.window_s)),
        "labels": {"severity": "warning", **extra},
        "annotations": {
            "summary": (
                "{{ $labels.feature }} adoption behind plan in " + who + ": {{ $value | humanizePercentage }}"
                " where the plan expects " + expected_now
            ),
            "description": (
                "Adoption of {{ $labels.feature }} in "
                + who
                + " is {{ $value | humanizePercentage }} of "
                + exposed_now
                + " exposed users, more than "
                + _points(behind.tolerance)
                + " under the "
                f"plan's {_CURVE_TEXT[wave.curve]}, which expects " + expected_now + " now and "
                f"{_pct(wave.target)} by {_iso(wave.deadline)} (wave started {_iso(wave.start)}). "
                "Owner: {{ $labels.owner }} (team {{ $labels.team }})."
            ),
            "runbook_url": options.runbook("AdoptionBehindPlan"),
            "dashboard_url": dashboard,
            **options.report(rollout.name),
        },
    }
    return [stalled, behind_plan]


def _switchover_records(rollout: Rollout, so: Switchover) -> list[dict[str, Any]]:
    labels = switchover_labels(rollout, so)
    new = f"(sum({selector('adoptstream_active_users', {'feature': rollout.feature, 'window': so.window})})"
    new += " or vector(0))"
    old = f"(sum({selector('adoptstream_active_users', {'feature': so.old_feature, 'window': so.window})})"
    old += " or vector(0))"
    return [
        _record(SWITCHOVER_ACTIVE, f"{new} + {old}", labels),
        _record(SWITCHOVER, f"{new}\n/\n(({new} + {old}) > 0)", labels),
        _record(SWITCHOVER_TARGET, f"vector({number(so.target)})", labels),
        _record(SWITCHOVER_START, f"vector({number(so.start)})", labels),
        _record(SWITCHOVER_DEADLINE, f"vector({number(so.deadline)})", labels),
        _record(SWITCHOVER_EXPECTED, _curve(so.curve, so.start, so.deadline, so.target), labels),
    ]


def _switchover_alerts(rollout: Rollout, so: Switchover, options: RenderOptions) -> list[dict[str, Any]]:
    me = {"rollout": rollout.name}
    share, active = selector(SWITCHOVER, me), selector(SWITCHOVER_ACTIVE, me)
    expected = selector(SWITCHOVER_EXPECTED, me)
    stall, behind = so.stall, so.behind_plan
    window = format_duration(stall.window_s)
    dashboard = options.dashboard("adoptstream-rollouts", rollout=rollout.name)
    extra = {"category": "adoption", "rollout": rollout.name, "wave": "switchover", "cohort": ALL_COHORTS}
    who = 'rollout "{{ $labels.rollout }}" ({{ $labels.old_feature }} -> {{ $labels.feature }})'
    users = (
        '{{ with printf "' + SWITCHOVER_ACTIVE + '{rollout=%q}" $labels.rollout | query }}'
        "{{ . | first | value | humanize }}{{ end }}"
    )
    expected_now = (
        '{{ with printf "' + SWITCHOVER_EXPECTED + '{rollout=%q}" $labels.rollout | query }}'
        "{{ . | first | value | humanizePercentage }}{{ end }}"
    )
    return [
        {
            "alert": "AdoptionSwitchoverStalled",
            "expr": (
                f"{share} < {number(so.target)}\n"
                f"and ({share} - {share} offset {window}) < {number(stall.min_progress)}\n"
                f"and {active} >= {stall.min_exposed}\n"
                f"and {_started(so.start)}"
            ),
            "for": format_duration(stall.hold_s),
            "labels": {"severity": "warning", **extra},
            "annotations": {
                "summary": (
                    "Switch-over stalled in " + who + ": {{ $labels.feature }} has "
                    f"{{{{ $value | humanizePercentage }}}} of active users (target {_pct(so.target)})"
                ),
                "description": (
                    "The share of {{ $labels.feature }} among the " + users + " users active on either "
                    "{{ $labels.feature }} or {{ $labels.old_feature }} (" + so.window + " window) has grown "
                    f"by less than {_points(stall.min_progress)} in the last "
                    f"{humanize_duration(stall.window_s)} and stands at "
                    "{{ $value | humanizePercentage }}; "
                    f"the plan retires {{{{ $labels.old_feature }}}} at {_pct(so.target)} by "
                    f"{_iso(so.deadline)} (switch-over started {_iso(so.start)}). "
                    "Owner: {{ $labels.owner }} (team {{ $labels.team }})."
                ),
                "runbook_url": options.runbook("AdoptionSwitchoverStalled"),
                "dashboard_url": dashboard,
                **options.report(rollout.name),
            },
        },
        {
            "alert": "AdoptionSwitchoverBehindPlan",
            "expr": (
                f"{share} < {expected} - {number(behind.tolerance)}\n"
                f"and {active} >= {stall.min_exposed}\n"
                f"and {_started(so.start)}"
            ),
            "for": format_duration(behind.hold_s(so.duration_s, stall.window_s)),
            "labels": {"severity": "warning", **extra},
            "annotations": {
                "summary": (
                    "Switch-over behind plan in " + who + ": {{ $value | humanizePercentage }} on "
                    "{{ $labels.feature }} where the plan expects " + expected_now
                ),
                "description": (
                    "{{ $labels.feature }} has {{ $value | humanizePercentage }} of the " + users + " users "
                    "active on either feature (" + so.window + " window), more than "
                    f"{_points(behind.tolerance)} under the plan's {_CURVE_TEXT[so.curve]}, which expects "
                    + expected_now
                    + f" now and {_pct(so.target)} by {_iso(so.deadline)}. "
                    "Owner: {{ $labels.owner }} (team {{ $labels.team }})."
                ),
                "runbook_url": options.runbook("AdoptionSwitchoverBehindPlan"),
                "dashboard_url": dashboard,
                **options.report(rollout.name),
            },
        },
    ]


def satisfaction_labels(rollout: Rollout, scale: str, period: str) -> dict[str, str]:
    """The labels every recorded satisfaction series of a rollout carries (one series per scale)."""
    return {
        "rollout": rollout.name,
        "feature": rollout.feature,
        "owner": rollout.owner,
        "team": rollout.team,
        "strategy": rollout.strategy,
        "scale": scale,
        "period": period,
    }


def _satisfaction_records(rollout: Rollout, floor: Satisfaction) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for scale, value in floor.floors:
        labels = satisfaction_labels(rollout, scale, floor.period)
        me = {"rollout": rollout.name, "scale": scale}
        answers = selector(
            "adoptstream:feedback_answers:users",
            {"feature": rollout.feature, "scale": scale, "period": floor.period},
        )
        score = selector(SATISFACTION, me)
        kpi = selector(SATISFACTION_KPIS[scale], {"feature": rollout.feature, "period": floor.period})
        out += [
            _record(SATISFACTION, f"sum({kpi})", labels),
            _record(SATISFACTION_ANSWERS, f"sum({answers}) or vector(0)", labels),
            _record(SATISFACTION_FLOOR, f"vector({number(value)})", labels),
            # 1: under the floor, 0: at or above it; absent: fewer than min_answers answers (cannot tell)
            _record(
                SATISFACTION_BELOW,
                f"({score} < bool {number(value)})\n"
                f"and {selector(SATISFACTION_ANSWERS, me)} >= {floor.min_answers}",
                labels,
            ),
        ]
    return out


def _satisfaction_alerts(
    rollout: Rollout, floor: Satisfaction, options: RenderOptions
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    days = humanize_duration(parse_duration(floor.period))
    answers = (
        '{{ with printf "'
        + SATISFACTION_ANSWERS
        + '{rollout=%q,scale=%q}" $labels.rollout $labels.scale | query }}'
        "{{ . | first | value | humanize }}{{ end }}"
    )
    for scale, value in floor.floors:
        me = {"rollout": rollout.name, "scale": scale}
        if scale == "nps":
            now, limit, what = '{{ $value | printf "%.0f" }}', f"{value:g}", "NPS"
        else:
            now, limit, what = "{{ $value | humanizePercentage }}", _pct(value), "CSAT (answers 4-5)"
        out.append(
            {
                "alert": "AdoptionSatisfactionBelowFloor",
                "expr": f"{selector(SATISFACTION, me)}\nand {selector(SATISFACTION_BELOW, me)} == 1",
                "for": format_duration(floor.for_s),
                "labels": {
                    "severity": "warning",
                    "category": "adoption",
                    "rollout": rollout.name,
                    "scale": scale,
                },
                "annotations": {
                    "summary": (
                        f"{{{{ $labels.feature }}}} {what} is {now}, below the floor of {limit} set by "
                        'rollout "{{ $labels.rollout }}"'
                    ),
                    "description": (
                        f"Over the last {days}, the {what} of {{{{ $labels.feature }}}} from " + answers + " "
                        f"answers is {now}, under the floor of {limit} that rollout "
                        '"{{ $labels.rollout }}" set (judged from '
                        f"{floor.min_answers} answers on). Survey answers carry no cohort: this is the "
                        "feature's score across every wave. "
                        "Owner: {{ $labels.owner }} (team {{ $labels.team }})."
                    ),
                    "runbook_url": options.runbook("AdoptionSatisfactionBelowFloor"),
                    "dashboard_url": options.dashboard("adoptstream-adoption", feature=rollout.feature),
                },
            }
        )
    return out


def _interval(windows: Iterable[int]) -> str | None:
    """A group interval for short (demo, test) windows so a default 1m evaluation does not blur them."""
    shortest = min(windows, default=None)
    if shortest is None or shortest >= 20 * 60:
        return None
    return format_duration(max(1, shortest // 40))


def render_rules(plans: PlanSet, options: RenderOptions | None = None) -> dict[str, Any]:
    """The rule file (as data) for all rollouts in ``plans``: one group per rollout."""
    options = options or RenderOptions()
    groups: list[dict[str, Any]] = []
    owners: dict[str, dict[str, str]] = {}
    for rollout in plans.rollouts:
        owners.setdefault(
            rollout.feature, {"feature": rollout.feature, "owner": rollout.owner, "team": rollout.team}
        )
    groups.append(
        {
            "name": "adoptstream-rollout-owners",
            "rules": [_record(FEATURE_OWNER, "vector(1)", labels) for labels in owners.values()],
        }
    )
    for rollout in plans.rollouts:
        rules: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        windows = [w.stall.window_s for w in rollout.waves]
        if rollout.satisfaction is not None:  # first: the waves' gates read it in the same evaluation
            rules += _satisfaction_records(rollout, rollout.satisfaction)
        for wave in rollout.waves:
            rules += _wave_records(rollout, wave)
            alerts += _wave_alerts(rollout, wave, options)
        if rollout.switchover is not None:
            rules += _switchover_records(rollout, rollout.switchover)
            alerts += _switchover_alerts(rollout, rollout.switchover, options)
            windows.append(rollout.switchover.stall.window_s)
        if rollout.satisfaction is not None:
            alerts += _satisfaction_alerts(rollout, rollout.satisfaction, options)
        group: dict[str, Any] = {"name": f"adoptstream-rollout:{rollout.name}"}
        interval = _interval(windows)
        if interval:
            group["interval"] = interval
        group["rules"] = rules + alerts
        groups.append(group)
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (PromQL), stable key order."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(doc: Any, header: str = "") -> str:
    """YAML text for a rule or Alertmanager file, with ``header`` as leading comment lines."""
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    lines = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) if header else ""
    return lines + body


def render_rules_text(plans: PlanSet, sources: Iterable[str], options: RenderOptions | None = None) -> str:
    """The rule file's text, with a header naming the plan files and the command that made it."""
    names = " ".join(sources)
    header = (
        f"Generated by `adoptstream rules render {names}` from the rollout plans: do not edit,\n"
        "edit the plans and render again. docs/operations.md describes every series and alert."
    )
    return dump_yaml(render_rules(plans, options), header)
