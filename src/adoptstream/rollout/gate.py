"""``adoptstream gate``: may the next wave go? One wave judged against its plan, from Prometheus.

    adoptstream gate PLANS... --rollout R --wave W --prometheus URL [--json]

exits 0 (pass), 1 (fail: behind plan, stalled, or the feature below its satisfaction floor) or 2 (cannot
tell yet: too few exposed users, too little history, too few answers, no data, Prometheus unreachable,
a bad plan), and prints one line saying why. The verdict is the recorded series
``adoptstream:rollout_wave_gate:verdict`` that the rules rendered from the same plan keep (the alerts and
the generated Argo Rollouts / Flagger templates read the same series); this command only reads it and
the numbers behind it, and checks that Prometheus runs the rules of this plan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from adoptstream.rollout import rules as R
from adoptstream.rollout.durations import humanize_duration
from adoptstream.rollout.plan import PlanError, Rollout, Wave, load_plans
from adoptstream.rollout.prometheus import Prometheus, PrometheusError, Series
from adoptstream.rollout.promql import one_of, selector

VERDICTS = {R.GATE_PASS: "PASS", R.GATE_FAIL: "FAIL", R.GATE_UNKNOWN: "CANNOT TELL"}
DEFAULT_TIMEOUT_S = 10.0


def query(base_url: str, expr: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Series]:
    """The series of an instant query (NaN values dropped)."""
    return Prometheus(base_url, timeout_s).instant(expr)


@dataclass
class ScaleReading:
    """A satisfaction floor of the rollout, as Prometheus sees it now."""

    scale: str
    floor: float
    min_answers: int
    score: float | None = None
    answers: float | None = None
    below_floor: float | None = None  # 1, 0, or None: too few answers
    floor_in_prometheus: float | None = None


@dataclass
class WaveReading:
    """The gate's verdict for one wave and the recorded numbers behind it."""

    rollout: str
    wave: str
    feature: str
    verdict: int | None = None  # None: Prometheus has no verdict series for the wave
    exposed: float | None = None
    adopted: float | None = None
    adoption: float | None = None
    expected: float | None = None
    gain: float | None = None
    judged: float | None = None
    stalled: float | None = None
    behind_plan: float | None = None
    target: float | None = None  # as recorded in Prometheus (compared with the plan)
    start: float | None = None
    deadline: float | None = None
    satisfaction: list[ScaleReading] = field(default_factory=list)


_WAVE_SERIES = {
    R.WAVE_GATE: "verdict",
    R.WAVE_EXPOSED: "exposed",
    R.WAVE_ADOPTED: "adopted",
    R.WAVE_ADOPTION: "adoption",
    R.WAVE_EXPECTED: "expected",
    R.WAVE_GAIN: "gain",
    R.WAVE_JUDGED: "judged",
    R.WAVE_STALLED: "stalled",
    R.WAVE_BEHIND: "behind_plan",
    R.WAVE_TARGET: "target",
    R.WAVE_START: "start",
    R.WAVE_DEADLINE: "deadline",
}
_SCALE_SERIES = {
    R.SATISFACTION: "score",
    R.SATISFACTION_ANSWERS: "answers",
    R.SATISFACTION_BELOW: "below_floor",
    R.SATISFACTION_FLOOR: "floor_in_prometheus",
}


def read_wave(
    prometheus: str, rollout: Rollout, wave: Wave, timeout_s: float = DEFAULT_TIMEOUT_S
) -> WaveReading:
    """Every recorded series of the wave (and of the rollout's satisfaction floor), in two queries."""
    reading = WaveReading(rollout=rollout.name, wave=wave.name, feature=rollout.feature)
    me = {"rollout": rollout.name, "wave": wave.name}
    for series in query(prometheus, selector("", me, {"__name__": one_of(_WAVE_SERIES)}), timeout_s):
        attr = _WAVE_SERIES.get(series.labels.get("__name__", ""))
        value = series.last
        if attr and value is not None:
            setattr(reading, attr, int(value) if attr == "verdict" else value)
    if rollout.satisfaction is not None:
        floor = rollout.satisfaction
        by_scale = {s: ScaleReading(s, v, floor.min_answers) for s, v in floor.floors}
        mine = selector("", {"rollout": rollout.name}, {"__name__": one_of(_SCALE_SERIES)})
        for series in query(prometheus, mine, timeout_s):
            scale = by_scale.get(series.labels.get("scale", ""))
            attr = _SCALE_SERIES.get(series.labels.get("__name__", ""))
            if scale is not None and attr and series.last is not None:
                setattr(scale, attr, series.last)
        reading.satisfaction = list(by_scale.values())
    return reading


# ------------------------------------------------------------------------------------------- the words


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


def _points(delta: float) -> str:
    value = abs(delta) * 100
    text = f"{value:.0f}" if value >= 1 or value == 0 else f"{value:.1f}"
    return f"{text} point{'' if text == '1' else 's'}"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _score(scale: str, value: float) -> str:
    return f"NPS {value:.0f}" if scale == "nps" else f"CSAT {_pct(value)}"


def _floor(scale: str, value: float) -> str:
    return f"{value:g}" if scale == "nps" else _pct(value)


def stale_rules(reading: WaveReading, wave: Wave, rollout: Rollout) -> str | None:
    """Why Prometheus's rules are not those of this plan (another target, start, deadline, floor)."""
    if reading.verdict is None:
        return None  # no rules at all: said as "no data"
    for what, there, here, show in (
        ("target", reading.target, wave.target, _pct),
        ("start", reading.start, wave.start, _when),
        ("deadline", reading.deadline, wave.deadline, _when),
    ):
        if there is None or not math.isclose(there, here, rel_tol=1e-9, abs_tol=1e-9):
            seen = show(there) if there is not None else "none"
            return f"Prometheus has the {what} {seen} for this wave, the plan {show(here)}"
    for scale in reading.satisfaction:
        there = scale.floor_in_prometheus
        if there is None or not math.isclose(there, scale.floor, abs_tol=1e-9):
            seen = _floor(scale.scale, there) if there is not None else "no floor"
            planned = _floor(scale.scale, scale.floor)
            return f"Prometheus has {seen} for {scale.scale}, the plan a floor of {planned}"
    return None


def reasons(reading: WaveReading, wave: Wave, now: float) -> list[str]:
    """What the verdict rests on, in plain words: the failures for a fail, the unknowns otherwise."""
    return _reasons(reading, wave, now) or ["the recorded series do not say why (see --json)"]


def _reasons(reading: WaveReading, wave: Wave, now: float) -> list[str]:
    out: list[str] = []
    ratio, expected = reading.adoption, reading.expected
    floors_failed = [s for s in reading.satisfaction if s.below_floor == 1]
    if reading.verdict == R.GATE_FAIL:
        if reading.judged == 1 and reading.behind_plan == 1 and ratio is not None and expected is not None:
            out.append(
                f"adoption {_pct(ratio)} of {reading.exposed or 0:.0f} exposed users is "
                f"{_points(expected - ratio)} behind the {_pct(expected)} planned by now"
            )
        if reading.judged == 1 and reading.stalled == 1 and reading.gain is not None:
            out.append(
                f"stalled: gained {_points(reading.gain)} in the last "
                f"{humanize_duration(wave.stall.window_s)} (less than {_points(wave.stall.min_progress)})"
            )
        for s in floors_failed:
            out.append(
                f"{_score(s.scale, s.score or 0)} from {s.answers or 0:.0f} answers is below the floor of "
                f"{_floor(s.scale, s.floor)}"
            )
        return out
    if reading.verdict == R.GATE_PASS:
        if ratio is not None and expected is not None:
            ahead = ratio - expected
            where = "ahead of" if ahead >= 0 else "behind"
            out.append(
                f"adoption {_pct(ratio)} of {reading.exposed or 0:.0f} exposed users, "
                f"{_points(ahead)} {where} the {_pct(expected)} planned by now"
                + (f" (within its tolerance of {_points(wave.behind_plan.tolerance)})" if ahead < 0 else "")
            )
        if ratio is not None and ratio >= wave.target:
            out.append(f"at or past its {_pct(wave.target)} target")
        elif reading.gain is not None:
            out.append(f"gained {_points(reading.gain)} in the last {humanize_duration(wave.stall.window_s)}")
        for s in reading.satisfaction:
            floor = _floor(s.scale, s.floor)
            out.append(f"{_score(s.scale, s.score or 0)} from {s.answers or 0:.0f} answers (floor {floor})")
        return out
    # cannot tell yet
    if reading.verdict is None:
        return [
            f"Prometheus has no {R.WAVE_GATE} for this wave: are the rules rendered from this plan loaded "
            "(adoptstream rules render)?"
        ]
    if now < wave.start:
        out.append(f"the wave starts {_when(wave.start)}")
    elif reading.exposed is None:
        out.append(f"no exposed users of {reading.feature} in the wave's cohorts yet")
    elif reading.judged != 1:
        out.append(
            f"{reading.exposed:.0f} exposed users, fewer than the {wave.stall.min_exposed} the plan needs "
            "to judge"
        )
    elif reading.stalled is None:
        out.append(
            f"adoption {_pct(ratio or 0)} is below target and Prometheus has less than the "
            f"{humanize_duration(wave.stall.window_s)} stall window of history to tell whether it grows"
        )
    for s in reading.satisfaction:
        if s.below_floor is None:
            out.append(
                f"{s.answers or 0:.0f} {s.scale.upper()} answers, fewer than the {s.min_answers} the "
                "satisfaction floor needs"
            )
    return out


def summary_line(reading: WaveReading, wave: Wave, now: float) -> str:
    """The one line the command prints: ``wave W of R: VERDICT — reasons``."""
    verdict = VERDICTS.get(reading.verdict if reading.verdict is not None else R.GATE_UNKNOWN, "CANNOT TELL")
    return f"wave {wave.name} of {reading.rollout}: {verdict} — {'; '.join(reasons(reading, wave, now))}"


# --------------------------------------------------------------------------------------------- command


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``gate``."""
    parser = subparsers.add_parser(
        "gate",
        help="judge a rollout wave against its plan from Prometheus: exit 0 pass, 1 fail, 2 cannot tell yet",
        description=(
            "Judges one wave of a rollout plan from the recorded series Prometheus keeps for it (the rules "
            "`adoptstream rules render` made from the same plan): adoption against the plan's curve, "
            "enough exposed users, not stalled, the satisfaction floor when the plan sets one. Exit code "
            "0: pass, 1: fail (behind plan, stalled or below the floor), 2: cannot tell yet (too few "
            "users, too little history, too few answers, no data, Prometheus unreachable, a bad plan)."
        ),
    )
    parser.add_argument("plans", nargs="+", metavar="PLANS.yaml", help="the plan file(s) the rules come from")
    parser.add_argument("--rollout", required=True, help="the rollout's name (its feature when it has none)")
    parser.add_argument("--wave", required=True, help="the wave's name")
    parser.add_argument("--prometheus", required=True, metavar="URL", help="e.g. http://prometheus:9090")
    parser.add_argument("--json", action="store_true", help="print the numbers behind the verdict as JSON")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS", help="default: %(default)s"
    )
    parser.set_defaults(func=run)
    return parser


def _emit(args: argparse.Namespace, code: int, line: str, doc: dict[str, Any]) -> int:
    if args.json:
        doc = {"verdict": VERDICTS[code].lower().replace(" ", "-"), "exit_code": code, "message": line, **doc}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(line)
    return code


def run(args: argparse.Namespace) -> int:
    """The command: 0 pass, 1 fail, 2 cannot tell yet."""
    who = f"wave {args.wave} of {args.rollout}"
    try:
        plans = load_plans(args.plans)
    except PlanError as exc:
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return _emit(
            args, R.GATE_UNKNOWN, f"{who}: CANNOT TELL — the plan has {len(exc.problems)} problem(s)", {}
        )
    rollout = next((r for r in plans.rollouts if r.name == args.rollout), None)
    if rollout is None:
        known = ", ".join(r.name for r in plans.rollouts)
        return _emit(
            args,
            R.GATE_UNKNOWN,
            f"{who}: CANNOT TELL — no rollout {args.rollout!r} in the plan ({known})",
            {},
        )
    wave = next((w for w in rollout.waves if w.name == args.wave), None)
    if wave is None:
        known = ", ".join(w.name for w in rollout.waves)
        return _emit(
            args,
            R.GATE_UNKNOWN,
            f"{who}: CANNOT TELL — rollout {rollout.name} has no wave {args.wave!r} ({known})",
            {},
        )
    now = dt.datetime.now(dt.UTC).timestamp()
    try:
        reading = read_wave(args.prometheus, rollout, wave, args.timeout)
    except PrometheusError as exc:
        return _emit(args, R.GATE_UNKNOWN, f"{who}: CANNOT TELL — {exc}", {})
    numbers = asdict(reading)
    numbers["recorded_verdict"] = numbers.pop("verdict")  # the exit code, or None without the series
    doc = {
        **numbers,
        "plan": {
            "target": wave.target,
            "start": wave.start,
            "deadline": wave.deadline,
            "curve": wave.curve,
            "min_exposed": wave.stall.min_exposed,
            "stall_window_s": wave.stall.window_s,
            "min_progress": wave.stall.min_progress,
            "tolerance": wave.behind_plan.tolerance,
        },
        "prometheus": args.prometheus,
        "evaluated_at": now,
    }
    stale = stale_rules(reading, wave, rollout)
    if stale:
        line = f"{who}: CANNOT TELL — Prometheus runs rules from another version of the plan: {stale}"
        return _emit(args, R.GATE_UNKNOWN, line + " (render the rules and reload Prometheus)", doc)
    code = reading.verdict if reading.verdict in VERDICTS else R.GATE_UNKNOWN
    return _emit(args, code, summary_line(reading, wave, now), doc)
