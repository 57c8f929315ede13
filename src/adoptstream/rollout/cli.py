"""``adoptstream rules``: check rollout plans and render Prometheus rules and Alertmanager routes.

adoptstream rules check PLANS...                 validate, print one line per wave
adoptstream rules render PLANS... [-o FILE]      plan-generated recording rules and alerts
adoptstream rules static [-o FILE]               the plan-independent rules
adoptstream rules alertmanager PLANS... [-o FILE]  routes and receivers for the plans' owners
adoptstream rules gates PLANS... [-o DIR]        Argo Rollouts / Flagger templates gating each wave
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from adoptstream.rollout.alertmanager import (
    DEFAULT_OWNER_WEBHOOK_URL,
    DEFAULT_PRODUCT_WEBHOOK_URL,
    DEFAULT_SRE_WEBHOOK_URL,
    ReceiverOptions,
    render_alertmanager_text,
)
from adoptstream.rollout.delivery import (
    DEFAULT_PROMETHEUS_ADDRESS,
    GateOptions,
    GateRenderError,
    render_gates_text,
)
from adoptstream.rollout.durations import humanize_duration
from adoptstream.rollout.plan import PlanError, PlanSet, load_plans
from adoptstream.rollout.rules import (
    DEFAULT_DASHBOARD_BASE_URL,
    DEFAULT_RUNBOOK_BASE_URL,
    RenderOptions,
    render_rules_text,
)
from adoptstream.rollout.static_rules import render_static_rules_text


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``rules`` and its subcommands."""
    parser = subparsers.add_parser(
        "rules",
        help="check rollout plans, render Prometheus rules and Alertmanager routes from them",
        description="Rollout plans as code: validate plans and render the rules and routes they imply.",
    )
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="validate plan files and summarise their waves")
    check.add_argument("plans", nargs="+", metavar="PLANS.yaml")
    check.set_defaults(func=_check)

    render = sub.add_parser("render", help="Prometheus rules (recording + alerts) generated from plans")
    render.add_argument("plans", nargs="+", metavar="PLANS.yaml")
    _links(render)
    render.add_argument(
        "--report-base-url",
        default=None,
        help="where `adoptstream report --serve` is reachable: the alerts then link to their rollout's "
        "section (annotation report_url; default: no link)",
    )
    _output(render)
    render.set_defaults(func=_render)

    static = sub.add_parser("static", help="the plan-independent rules (adoption, stickiness, operations)")
    _links(static)
    _output(static)
    static.set_defaults(func=_static)

    am = sub.add_parser("alertmanager", help="Alertmanager config routing each plan's alerts to its owner")
    am.add_argument("plans", nargs="+", metavar="PLANS.yaml")
    am.add_argument(
        "--owner-webhook-url",
        default=DEFAULT_OWNER_WEBHOOK_URL,
        help="webhook for owners without owners.<name>.webhook_url; {owner} is replaced "
        "(default: %(default)s)",
    )
    am.add_argument("--sre-webhook-url", default=DEFAULT_SRE_WEBHOOK_URL, help="default: %(default)s")
    am.add_argument(
        "--product-webhook-url",
        default=DEFAULT_PRODUCT_WEBHOOK_URL,
        help="adoption alerts of features no plan owns (default: %(default)s)",
    )
    am.add_argument(
        "--templates",
        action="append",
        metavar="GLOB",
        help="template files to load, relative to the config (default: templates/*.tmpl)",
    )
    _output(am)
    am.set_defaults(func=_alertmanager)

    gates = sub.add_parser(
        "gates",
        help="an Argo Rollouts AnalysisTemplate and a Flagger MetricTemplate per rollout, gating its waves",
    )
    gates.add_argument("plans", nargs="+", metavar="PLANS.yaml")
    gates.add_argument(
        "--prometheus-address",
        default=DEFAULT_PROMETHEUS_ADDRESS,
        help="Prometheus as the tools reach it (default: %(default)s)",
    )
    gates.add_argument(
        "-o", "--output", metavar="DIR", help="write one file per template here instead of stdout"
    )
    gates.set_defaults(func=_gates)
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    return parser


def _links(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runbook-base-url",
        default=DEFAULT_RUNBOOK_BASE_URL,
        help="where docs/runbooks/ is published (default: %(default)s)",
    )
    parser.add_argument(
        "--dashboard-base-url",
        default=DEFAULT_DASHBOARD_BASE_URL,
        help="Grafana dashboards base URL (default: %(default)s)",
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help="write here (atomically) instead of stdout")


def _load(args: argparse.Namespace) -> PlanSet | None:
    return load_plan_files(args.plans, "adoptstream rules")


def load_plan_files(paths: list[str], command: str) -> PlanSet | None:
    """The plans, or None after printing every problem found in them (with file and line) on stderr."""
    try:
        return load_plans(paths)
    except PlanError as exc:
        print(f"{command}: {len(exc.problems)} problem(s) in the rollout plans:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def write_output(text: str, output: str | None) -> None:
    """`text` to stdout, or atomically to the file `output` (a reader never sees half of it)."""
    if not output:
        sys.stdout.write(text)
        return
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target)
    print(f"wrote {target}", file=sys.stderr)


def _display(paths: list[str]) -> list[str]:
    """Plan paths for the generated header: relative to the working directory when inside it."""
    out = []
    for p in paths:
        rel = os.path.relpath(p)
        out.append(rel if not rel.startswith("..") else p)
    return out


def _options(args: argparse.Namespace) -> RenderOptions:
    return RenderOptions(
        runbook_base_url=args.runbook_base_url,
        dashboard_base_url=args.dashboard_base_url,
        report_base_url=getattr(args, "report_base_url", None),
    )


def _check(args: argparse.Namespace) -> int:
    plans = _load(args)
    if plans is None:
        return 1

    def day(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")

    for r in plans.rollouts:
        print(f"{r.name} ({r.strategy}, feature {r.feature}, owner {r.owner}) [{r.source}]")
        for w in r.waves:
            print(
                f"  wave {w.name}: cohorts {w.cohorts_label}; {w.target:.0%} by {day(w.deadline)} "
                f"from {day(w.start)} ({w.curve}); stalled if < {w.stall.min_progress:.1%} gained in "
                f"{humanize_duration(w.stall.window_s)} with >= {w.stall.min_exposed} exposed"
            )
        if r.satisfaction is not None:
            floor = r.satisfaction
            scores = " and ".join(
                f"NPS >= {v:g}" if k == "nps" else f"CSAT >= {v:.0%}" for k, v in floor.floors
            )
            print(
                f"  satisfaction of {r.feature}: {scores} over {floor.period}, "
                f"judged from {floor.min_answers} answers"
            )
        if r.switchover is not None:
            s = r.switchover
            print(
                f"  switch-over {s.old_feature} -> {r.feature}: {s.target:.0%} of {s.window} active users "
                f"by {day(s.deadline)} from {day(s.start)}"
            )
    print(f"ok: {len(plans.rollouts)} rollout(s), {len(plans.owner_names())} owner(s)")
    return 0


def _render(args: argparse.Namespace) -> int:
    plans = _load(args)
    if plans is None:
        return 1
    write_output(render_rules_text(plans, _display(args.plans), _options(args)), args.output)
    return 0


def _static(args: argparse.Namespace) -> int:
    write_output(render_static_rules_text(_options(args)), args.output)
    return 0


def _alertmanager(args: argparse.Namespace) -> int:
    plans = _load(args)
    if plans is None:
        return 1
    options = ReceiverOptions(
        owner_webhook_url=args.owner_webhook_url,
        sre_webhook_url=args.sre_webhook_url,
        product_webhook_url=args.product_webhook_url,
        templates=tuple(args.templates or ("templates/*.tmpl",)),
    )
    write_output(render_alertmanager_text(plans, _display(args.plans), options), args.output)
    return 0


def _gates(args: argparse.Namespace) -> int:
    plans = _load(args)
    if plans is None:
        return 1
    try:
        files = render_gates_text(
            plans, _display(args.plans), GateOptions(prometheus_address=args.prometheus_address)
        )
    except GateRenderError as exc:
        print(f"adoptstream rules: {exc}", file=sys.stderr)
        return 1
    if not args.output:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    for name, text in files.items():
        write_output(text, str(Path(args.output) / name))
    return 0
