"""The rollout report as one self-contained HTML page: inline CSS, charts as inline SVG, no script,
nothing fetched when it is opened."""

from __future__ import annotations

import datetime as dt
from html import escape

from adoptstream.report.data import Points, Progress, Report, RolloutReport, pct, seconds_text, when

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c6cbd6;font-size:13px}main{padding:8px 32px 40px;max-width:1200px}
section.rollout{background:#fff;border:1px solid #dde1e8;border-radius:8px;margin:20px 0;padding:16px 22px}
h2{margin:0 0 4px;font-size:19px}.meta{color:#5b6475;font-size:13px;margin:0 0 10px}
.headline{font-weight:600;margin:6px 0 10px}ul.sentences{margin:0 0 12px;padding-left:20px}
ul.sentences li{margin:3px 0}.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;
font-weight:600;margin-left:6px;vertical-align:2px}.s-stalled,.s-behind-plan{background:#fde2e1;color:#a4161a}
.s-on-track,.s-reached-target,.s-ahead-of-plan{background:#dcf5e3;color:#186a3b}
.s-not-started,.s-no-users-yet{background:#eceff4;color:#4c566a}
table{border-collapse:collapse;width:100%;margin:8px 0 12px;font-size:14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9ef}th{color:#5b6475;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}.charts{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;flex:1 1 360px;max-width:560px}figcaption{font-size:13px;color:#5b6475;margin-bottom:2px}
svg{background:#fbfbfd;border:1px solid #e6e9ef;border-radius:6px}.facts{display:flex;gap:26px;flex-wrap:wrap;
margin:6px 0 4px}.fact b{display:block;font-size:20px}.fact span{color:#5b6475;font-size:12px}
.alerts li{margin:3px 0}.firing{color:#a4161a;font-weight:600}.pending{color:#9a6700;font-weight:600}
.problems{background:#fff4e5;border:1px solid #f0c36d;padding:8px 14px;border-radius:6px}
"""

W, H = 540, 220
PAD_L, PAD_R, PAD_T, PAD_B = 42, 12, 12, 26


def _x(t: float, start: float, end: float) -> float:
    return PAD_L + (t - start) / max(end - start, 1e-9) * (W - PAD_L - PAD_R)


def _y(ratio: float) -> float:
    return PAD_T + (1 - min(max(ratio, 0.0), 1.0)) * (H - PAD_T - PAD_B)


def _polyline(points: Points, start: float, end: float, css: str, label: str) -> str:
    inside = [(t, v) for t, v in points if start <= t <= end]
    if not inside:
        return ""
    coords = " ".join(f"{_x(t, start, end):.1f},{_y(v):.1f}" for t, v in inside)
    return f'<polyline class="{css}" data-series="{escape(label)}" points="{coords}"/>'


def chart(p: Progress, start: float, end: float, now: float) -> str:
    """Adoption (solid, with its latest point), the plan (dashed), the target (dotted) over time."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(p.title)}: adoption against the plan">',
        "<style>.grid{stroke:#e3e6ec;stroke-width:1}.axis{font:11px sans-serif;fill:#6b7385}"
        ".actual{fill:none;stroke:#2b6cb0;stroke-width:2.4}.plan{fill:none;stroke:#8a94a6;stroke-width:1.6;"
        "stroke-dasharray:6 4}.target{stroke:#2f9e44;stroke-width:1.2;stroke-dasharray:2 4}"
        ".now{stroke:#c2c7d0;stroke-width:1}.dot{fill:#2b6cb0}</style>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        y = _y(tick)
        parts.append(f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.0%}</text>'
        )
    for t, anchor in ((start, "start"), (end, "end")):
        label = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%d %b %H:%M")
        parts.append(
            f'<text class="axis" x="{_x(t, start, end):.1f}" y="{H - 8}" text-anchor="{anchor}">'
            f"{label}</text>"
        )
    if start <= now <= end:
        x = _x(now, start, end)
        parts.append(f'<line class="now" x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}"/>')
        parts.append(f'<text class="axis" x="{x:.1f}" y="{PAD_T + 10}" text-anchor="middle">now</text>')
    ty = _y(p.target)
    parts.append(f'<line class="target" x1="{PAD_L}" x2="{W - PAD_R}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
    parts.append(_polyline(p.plan, start, end, "plan", "plan"))
    parts.append(_polyline(p.actual, start, end, "actual", "adoption"))
    if p.actual:
        t, v = p.actual[-1]
        parts.append(f'<circle class="dot" cx="{_x(t, start, end):.1f}" cy="{_y(v):.1f}" r="3.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def _status(status: str) -> str:
    return f'<span class="badge s-{status.replace(" ", "-")}">{escape(status)}</span>'


def _rollout(r: RolloutReport, now: float) -> str:
    ro = r.rollout
    owner = f"owner {escape(ro.owner)}" + (
        f" (team {escape(ro.team)})" if ro.team and ro.team != ro.owner else ""
    )
    out = [
        f'<section class="rollout" id="{escape(r.anchor)}">',
        f"<h2>{escape(ro.name)}</h2>",
        f'<p class="meta">Feature <b>{escape(ro.feature)}</b> · {escape(ro.strategy)} rollout · {owner}'
        + (f" · {escape(ro.description)}" if ro.description else "")
        + "</p>",
        f'<p class="headline">{escape(r.headline)}</p>',
        '<ul class="sentences">',
        *(f"<li>{escape(p.sentence)}{_status(p.status)}</li>" for p in r.progress),
        "</ul>",
    ]
    waves = [p for p in r.progress if p.title != "Switch-over"]
    exposed = sum(p.users or 0 for p in waves)
    adopted = sum(p.adopted or 0 for p in waves)
    facts = []
    if waves:
        facts += [(f"{exposed:,}", "exposed users"), (f"{adopted:,}", "adopted")]
    facts += [
        (seconds_text(r.ttfu_p50_s), "median time to first use"),
        (seconds_text(r.ttfu_p90_s), "90% used it within"),
        (pct(r.stickiness), "stickiness (DAU / MAU)"),
        ("–" if r.active_30d is None else f"{r.active_30d:,}", "active users, 30 days"),
    ]
    out.append('<div class="facts">')
    out += [f'<div class="fact"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in facts]
    out.append("</div>")
    out.append(
        "<table><thead><tr><th></th><th>Cohorts</th><th>Status</th><th>Exposed</th><th>Adopted</th>"
        "<th>Adoption</th><th>Plan now</th><th>Target</th><th>Due</th></tr></thead><tbody>"
    )
    for p in r.progress:
        users = "–" if p.users is None else f"{p.users:,}"
        adopted_text = "–" if p.adopted is None else f"{p.adopted:,}"
        out.append(
            f'<tr data-wave="{escape(p.key)}"><td>{escape(p.title)}</td>'
            f"<td>{escape(p.who)}</td><td>{_status(p.status)}</td>"
            f'<td class="n">{users}</td><td class="n">{adopted_text}</td><td class="n">{pct(p.value)}</td>'
            f'<td class="n">{pct(p.expected)}</td><td class="n">{pct(p.target)}</td>'
            f"<td>{escape(when(p.deadline, now))}</td></tr>"
        )
    out.append("</tbody></table>")
    out.append('<div class="charts">')
    for p in r.progress:
        out.append(
            f"<figure><figcaption>{escape(p.title)}: adoption (solid) against the plan (dashed) and the "
            f"target (dotted)</figcaption>{chart(p, r.chart_start, r.chart_end, now)}</figure>"
        )
    out.append("</div>")
    if r.alerts:
        out.append('<p><b>What is alerting</b></p><ul class="alerts">')
        for a in sorted(r.alerts, key=lambda a: (a.state != "firing", a.name)):
            since = f" since {escape(when(a.since, now))}" if a.since else ""
            out.append(
                f'<li><span class="{escape(a.state)}">{escape(a.state)}</span>{since}: '
                f"{escape(a.summary or a.name)}</li>"
            )
        out.append("</ul>")
    else:
        out.append("<p>No alert is pending or firing for this rollout.</p>")
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Report, *, refresh_s: int | None = None) -> str:
    """The page; ``refresh_s`` makes the browser reload it (the served, live page)."""
    now = report.generated_at
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    attention = [
        r for r in report.rollouts if any(p.status in ("stalled", "behind plan") for p in r.progress)
    ]
    summary = (
        f"{len(report.rollouts)} rollout{'s' if len(report.rollouts) != 1 else ''}, "
        f"{len(attention)} needing attention"
    )
    head = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        *([f'<meta http-equiv="refresh" content="{refresh_s}">'] if refresh_s else []),
        '<link rel="icon" href="data:,">',  # no favicon request: the page needs nothing from anywhere
        "<title>Rollout report</title>",
        f'<style>{CSS}</style></head><body data-generated-at="{now:.3f}">',
        f"<header><h1>Rollout report</h1><p>{escape(summary)} · as of {stamp} · from "
        f"{escape(report.prometheus_url)}</p></header><main>",
    ]
    body = []
    if report.problems:
        body.append('<div class="problems"><b>Could not read everything:</b><ul>')
        body += [f"<li>{escape(p)}</li>" for p in report.problems]
        body.append("</ul></div>")
    if report.rollouts:
        body.append("<nav><p>")
        body.append(
            " · ".join(
                f'<a href="#{escape(r.anchor)}">{escape(r.rollout.name)}</a>'
                + ("" if r not in attention else " ⚠")
                for r in report.rollouts
            )
        )
        body.append("</p></nav>")
    body += [_rollout(r, now) for r in report.rollouts]
    return "\n".join([*head, *body, "</main></body></html>", ""])
