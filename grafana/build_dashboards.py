#!/usr/bin/env python3
"""Builds the provisioned Grafana dashboards in grafana/dashboards/ (dashboards as code).

    python grafana/build_dashboards.py          # rewrite the JSON files
    python grafana/build_dashboards.py --check  # exit 1 when a committed file differs from this source

The JSON files are what Grafana loads (grafana/provisioning/dashboards/adoptstream.yml points at them), and
tests/unit/test_grafana_dashboards.py checks that they match this script, so edit here, not in the JSON
(provisioned dashboards cannot be saved from the UI: `allowUiUpdates: false`).

Aggregation rule from the metric contract: each worker holds a disjoint part of the users, so every
adoption number is `sum` over workers (`sum by (...)` / `sum without (instance, job)`); the recording
rules (`adoptstream:*`) are already aggregated and are used as they are. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["adoptstream"]

UID_ADOPTION = "adoptstream-adoption"
UID_ROLLOUTS = "adoptstream-rollouts"
UID_OPERATIONS = "adoptstream-operations"

# The value a multi-select variable takes for "All": a regex, not a list of every value (a thousand
# features would make every query a thousand-way alternation). `.*` also matches series whose label is
# empty or absent, which a rollout's `owner` may be.
ALL = ".*"

Panel = dict[str, Any]


# --------------------------------------------------------------------------------------------- layout
class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new line when full."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.line_h = 0
        self.next_id = 1
        self.panels: list[Panel] = []

    def _id(self) -> int:
        pid = self.next_id
        self.next_id += 1
        return pid

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def newline(self) -> None:
        if self.x:
            self.y += self.line_h
            self.x = 0
            self.line_h = 0

    def add(self, panel: Panel, w: int, h: int) -> None:
        if self.x + w > 24:
            self.newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.line_h = max(self.line_h, h)
        if self.x >= 24:
            self.newline()


# -------------------------------------------------------------------------------------------- targets
def q(
    expr: str,
    legend: str = "__auto",
    ref: str = "A",
    *,
    instant: bool = False,
    fmt: str = "time_series",
    interval: str = "",
) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "refId": ref,
    }
    if interval:
        target["interval"] = interval
    return target


def refs(*targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Gives the targets refIds A, B, C, ... in order."""
    for i, target in enumerate(targets):
        target["refId"] = chr(ord("A") + i)
    return list(targets)


# --------------------------------------------------------------------------------------------- panels
def _thresholds(steps: list[tuple[float | None, str]] | None) -> dict[str, Any]:
    steps = steps or [(None, "green")]
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def _base(kind: str, title: str, description: str, targets: list[dict[str, Any]]) -> Panel:
    return {"type": kind, "title": title, "description": description, "datasource": DS, "targets": targets}


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    stack: bool = False,
    bars: bool = False,
    minimum: float | None = 0,
    maximum: float | None = None,
    decimals: int | None = None,
    overrides: list[dict[str, Any]] | None = None,
    legend_calcs: tuple[str, ...] = ("lastNotNull", "max"),
    thresholds: list[tuple[float | None, str]] | None = None,
    threshold_style: str = "off",
) -> Panel:
    panel = _base("timeseries", title, description, targets)
    defaults: dict[str, Any] = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 80 if bars else (25 if stack else 10),
            "gradientMode": "none",
            "showPoints": "never",
            "spanNulls": False,
            "lineInterpolation": "linear",
            "axisPlacement": "auto",
            "axisBorderShow": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": threshold_style},
        },
        "unit": unit,
        "thresholds": _thresholds(thresholds),
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    panel["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    panel["options"] = {
        "legend": {
            "showLegend": True,
            "displayMode": "table",
            "placement": "bottom",
            "calcs": list(legend_calcs),
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    thresholds: list[tuple[float | None, str]] | None = None,
    decimals: int | None = None,
    graph: bool = True,
    color_mode: str = "value",
    mappings: list[dict[str, Any]] | None = None,
    text_mode: str = "auto",
) -> Panel:
    panel = _base("stat", title, description, targets)
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"},
        "unit": unit,
        "thresholds": _thresholds(thresholds),
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "area" if graph else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": text_mode,
        "wideLayout": True,
        "showPercentChange": False,
    }
    return panel


def bargauge(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "percentunit",
    minimum: float = 0,
    maximum: float | None = 1,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> Panel:
    panel = _base("bargauge", title, description, targets)
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"},
        "unit": unit,
        "min": minimum,
        "thresholds": _thresholds(thresholds),
    }
    if maximum is not None:
        defaults["max"] = maximum
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "valueMode": "color",
        "namePlacement": "auto",
        "showUnfilled": True,
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
        "maxVizHeight": 300,
    }
    return panel


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    rename: dict[str, str] | None = None,
    order: list[str] | None = None,
    hide: list[str] | None = None,
    sort_by: tuple[str, bool] | None = None,
    column_units: dict[str, str] | None = None,
    gauge_columns: list[str] | None = None,
    merge: bool = True,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    """A table of instant queries (format table), merged on their labels into one row per series."""
    panel = _base("table", title, description, targets)
    transformations: list[dict[str, Any]] = []
    if merge:
        transformations.append({"id": "merge", "options": {}})
    exclude = {"Time": True, "__name__": True}
    for name in hide or []:
        exclude[name] = True
    organize: dict[str, Any] = {"excludeByName": exclude, "renameByName": rename or {}}
    if order:
        organize["indexByName"] = {name: i for i, name in enumerate(order)}
    transformations.append({"id": "organize", "options": organize})
    if sort_by:
        transformations.append(
            {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": sort_by[0], "desc": sort_by[1]}]}}
        )
    panel["transformations"] = transformations
    field_overrides: list[dict[str, Any]] = []
    for column, unit in (column_units or {}).items():
        props: list[dict[str, Any]] = [{"id": "unit", "value": unit}]
        if column in (gauge_columns or []):
            props += [
                {"id": "min", "value": 0},
                {"id": "max", "value": 1},
                {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
                {"id": "color", "value": {"mode": "continuous-RdYlGr"}},
            ]
        field_overrides.append({"matcher": {"id": "byName", "options": column}, "properties": props})
    panel["fieldConfig"] = {
        "defaults": {
            "custom": {
                "align": "auto",
                "cellOptions": {"type": "auto"},
                "inspect": False,
                "filterable": True,
            },
            "thresholds": _thresholds(None),
            "color": {"mode": "thresholds"},
        },
        "overrides": field_overrides + (overrides or []),
    }
    panel["options"] = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
    }
    return panel


def heatmap(title: str, description: str, targets: list[dict[str, Any]], *, unit: str = "s") -> Panel:
    panel = _base("heatmap", title, description, targets)
    panel["maxDataPoints"] = 60
    panel["fieldConfig"] = {
        "defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False}}},
        "overrides": [],
    }
    panel["options"] = {
        "calculate": False,
        "cellGap": 1,
        "cellValues": {"unit": "short"},
        "color": {
            "mode": "scheme",
            "scheme": "Oranges",
            "fill": "dark-orange",
            "scale": "exponential",
            "exponent": 0.5,
            "steps": 64,
            "reverse": False,
        },
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
        "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
    }
    return panel


def state_timeline(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    mappings: list[dict[str, Any]],
    thresholds: list[tuple[float | None, str]] | None = None,
) -> Panel:
    panel = _base("state-timeline", title, description, targets)
    panel["fieldConfig"] = {
        "defaults": {
            "color": {"mode": "thresholds"},
            "thresholds": _thresholds(thresholds),
            "mappings": mappings,
            "custom": {"fillOpacity": 75, "lineWidth": 0},
        },
        "overrides": [],
    }
    panel["options"] = {
        "showValue": "never",
        "mergeValues": True,
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel


def value_map(mapping: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """{"0": ("down", "red")} -> a Grafana value mapping."""
    return [
        {
            "type": "value",
            "options": {
                value: {"text": text, "color": color, "index": i}
                for i, (value, (text, color)) in enumerate(mapping.items())
            },
        }
    ]


def regex_style(pattern: str, style: dict[str, Any]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byRegexp", "options": pattern},
        "properties": [{"id": "custom.lineStyle", "value": style}],
    }


DASHED = {"fill": "dash", "dash": [10, 10]}
DOTTED = {"fill": "dot", "dash": [0, 10]}


# ------------------------------------------------------------------------------------------ variables
def datasource_var() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Prometheus", "value": "prometheus"},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_var(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = True,
    include_all: bool = True,
    current: str | None = None,
    description: str = "",
) -> dict[str, Any]:
    if current is None:
        cur: dict[str, Any] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        cur = {"selected": True, "text": current, "value": current}
    var: dict[str, Any] = {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DS,
        "definition": query,
        # A plain string: Grafana parses it into its variable editor's fields when the editor opens.
        "query": query,
        "refresh": 2,  # on time range change: new features and waves show up without a reload
        "regex": "",
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "current": cur,
        "hide": 0,
        "options": [],
        "skipUrlSync": False,
    }
    if include_all:
        var["allValue"] = ALL
    return var


# ----------------------------------------------------------------------------------------- dashboards
def dashboard(
    uid: str,
    title: str,
    description: str,
    layout: Layout,
    variables: list[dict[str, Any]],
    *,
    time_from: str = "now-24h",
    annotations: list[dict[str, Any]] | None = None,
    refresh: str = "1m",
) -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *(annotations or []),
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "title": "adoptstream",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "liveNow": False,
        "panels": layout.panels,
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m", "1h"]},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


PCT_THRESHOLDS: list[tuple[float | None, str]] = [
    (None, "red"),
    (0.2, "orange"),
    (0.5, "yellow"),
    (0.8, "green"),
]


def adoption_overview() -> dict[str, Any]:
    f = 'feature=~"$feature"'
    fc = 'feature=~"$feature", cohort=~"$cohort"'
    lay = Layout()

    lay.row('Headline: all features (feature="*")')
    for title, window, desc in (
        (
            "DAU",
            "1d",
            "Distinct users with at least one use of any feature in the current UTC hour and "
            "the 23 whole hours before it.",
        ),
        (
            "WAU",
            "7d",
            "Distinct users with at least one use of any feature in the last 7 days (hour-aligned).",
        ),
        (
            "MAU",
            "30d",
            "Distinct users with at least one use of any feature in the last 30 days (hour-aligned).",
        ),
    ):
        lay.add(
            stat(title, desc, [q(f'sum(adoptstream_active_users{{feature="*", window="{window}"}})', title)]),
            4,
            5,
        )
    lay.add(
        stat(
            "Stickiness (DAU / MAU)",
            "Share of the month's active users who were active in the last day (recording rule "
            "adoptstream:stickiness:ratio).",
            [q('adoptstream:stickiness:ratio{feature="*"}', "stickiness")],
            unit="percentunit",
            decimals=1,
            thresholds=[(None, "orange"), (0.1, "yellow"), (0.2, "green")],
        ),
        4,
        5,
    )
    lay.add(
        stat(
            "Signed-up users",
            'Distinct users with at least one signup event (exposed_users for feature="*"), all cohorts.',
            [q('sum(adoptstream_exposed_users{feature="*"})', "signed up")],
        ),
        4,
        5,
    )
    lay.add(
        stat(
            "Overall adoption",
            "Signed-up users who used any feature at least once (adoptstream:adoption_feature:ratio "
            'for feature="*").',
            [q('adoptstream:adoption_feature:ratio{feature="*"}', "adoption")],
            unit="percentunit",
            decimals=1,
            thresholds=PCT_THRESHOLDS,
        ),
        4,
        5,
    )

    lay.row("Active users per feature")
    for title, window in (("DAU per feature", "1d"), ("WAU per feature", "7d"), ("MAU per feature", "30d")):
        lay.add(
            timeseries(
                title,
                f"Distinct users with at least one accepted use of the feature in the {window} window, "
                "summed over all workers (each worker holds a disjoint part of the users).",
                [q(f'sum by (feature) (adoptstream_active_users{{{f}, window="{window}"}})', "{{feature}}")],
            ),
            8,
            8,
        )
    lay.add(
        timeseries(
            "Stickiness per feature (DAU / MAU)",
            'active_users{window="1d"} / active_users{window="30d"} per feature (recording rule '
            "adoptstream:stickiness:ratio). High stickiness: people who use the feature keep using it.",
            [q(f"adoptstream:stickiness:ratio{{{f}}}", "{{feature}}")],
            unit="percentunit",
            maximum=1,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Feature uses per second",
            "Rate of accepted `use` events per feature (adoptstream_feature_uses_total).",
            [
                q(
                    f"sum by (feature) (rate(adoptstream_feature_uses_total{{{f}}}[$__rate_interval]))",
                    "{{feature}}",
                )
            ],
            unit="suffix: uses/s",
        ),
        12,
        8,
    )

    lay.row("Adoption")
    lay.add(
        bargauge(
            "Adoption ratio per feature",
            "adopted_users / exposed_users over all cohorts (recording rule "
            "adoptstream:adoption_feature:ratio): of the users given or shown the feature, the share who "
            "used it at least once.",
            [q(f"sort_desc(adoptstream:adoption_feature:ratio{{{f}}})", "{{feature}}", instant=True)],
            thresholds=PCT_THRESHOLDS,
        ),
        8,
        10,
    )
    lay.add(
        table(
            "Adoption ratio per feature and cohort",
            "adoptstream:adoption:ratio with the exposed and adopted users behind it, per cohort (the cohort "
            "of the user's earliest exposure to the feature, or `unassigned`).",
            refs(
                q(f"adoptstream:adoption:ratio{{{fc}}}", instant=True, fmt="table"),
                q(f"sum by (feature, cohort) (adoptstream_exposed_users{{{fc}}})", instant=True, fmt="table"),
                q(f"sum by (feature, cohort) (adoptstream_adopted_users{{{fc}}})", instant=True, fmt="table"),
            ),
            rename={
                "feature": "Feature",
                "cohort": "Cohort",
                "Value #A": "Adoption",
                "Value #B": "Exposed",
                "Value #C": "Adopted",
            },
            order=["feature", "cohort", "Value #A", "Value #B", "Value #C"],
            sort_by=("Adoption", True),
            column_units={"Adoption": "percentunit", "Exposed": "short", "Adopted": "short"},
            gauge_columns=["Adoption"],
        ),
        16,
        10,
    )
    lay.add(
        timeseries(
            "Adoption ratio per feature over time",
            "adoptstream:adoption_feature:ratio per feature.",
            [q(f"adoptstream:adoption_feature:ratio{{{f}}}", "{{feature}}")],
            unit="percentunit",
            maximum=1,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Exposed vs adopted users (selected cohorts)",
            "Users exposed to the feature (dashed) and those of them who used it (solid), summed over the "
            "selected cohorts and over all workers.",
            refs(
                q(f"sum by (feature) (adoptstream_exposed_users{{{fc}}})", "{{feature}} exposed"),
                q(f"sum by (feature) (adoptstream_adopted_users{{{fc}}})", "{{feature}} adopted"),
            ),
            overrides=[regex_style(".* exposed$", DASHED)],
        ),
        12,
        8,
    )

    lay.row("Time to first use")
    # Sums the selected features' distributions; `*` (any feature) only when it is the sole selection,
    # so "All" does not count every adopted user twice (once for the feature, once for `*`).
    bucket = "adoptstream_time_to_first_use_seconds_bucket"
    lay.add(
        heatmap(
            "Time to first use (selected features)",
            "How long adopted users took from exposure (for `*`: signup) to their first use, as the current "
            "state of the histogram at each time (no rate: a late event corrects it). Summed over the "
            "selected features; `*` is shown only when it is the only selection.",
            [
                q(
                    f'sum by (le) ({bucket}{{{f}, feature!="*"}}) or sum by (le) ({bucket}{{{f}}})',
                    "{{le}}",
                    fmt="heatmap",
                    interval="5m",
                )
            ],
        ),
        12,
        10,
    )
    lay.add(
        timeseries(
            "Time to first use p50 / p90 per feature",
            "histogram_quantile over sum by (feature, le) of the time-to-first-use buckets (interpolated "
            "within buckets 60 s, 5 min, 15 min, 1 h, 4 h, 1 d, 3 d, 7 d, 30 d).",
            refs(
                q(f"histogram_quantile(0.5, sum by (feature, le) ({bucket}{{{f}}}))", "{{feature}} p50"),
                q(f"histogram_quantile(0.9, sum by (feature, le) ({bucket}{{{f}}}))", "{{feature}} p90"),
            ),
            unit="s",
            overrides=[regex_style(".* p90$", DASHED)],
        ),
        12,
        10,
    )

    lay.row("Top features")
    nf = 'feature=~"$feature", feature!="*"'
    lay.add(
        table(
            "Top features",
            "One row per feature (without `*`), by MAU: active users per window, stickiness, adoption, "
            "median time to first use and the accepted uses over the dashboard's time range.",
            refs(
                q(
                    f'sum by (feature) (adoptstream_active_users{{{nf}, window="30d"}})',
                    instant=True,
                    fmt="table",
                ),
                q(
                    f'sum by (feature) (adoptstream_active_users{{{nf}, window="7d"}})',
                    instant=True,
                    fmt="table",
                ),
                q(
                    f'sum by (feature) (adoptstream_active_users{{{nf}, window="1d"}})',
                    instant=True,
                    fmt="table",
                ),
                q(f"adoptstream:stickiness:ratio{{{nf}}}", instant=True, fmt="table"),
                q(f"adoptstream:adoption_feature:ratio{{{nf}}}", instant=True, fmt="table"),
                q(
                    f"histogram_quantile(0.5, sum by (feature, le) ({bucket}{{{nf}}}))",
                    instant=True,
                    fmt="table",
                ),
                q(
                    f"sum by (feature) (increase(adoptstream_feature_uses_total{{{nf}}}[$__range]))",
                    instant=True,
                    fmt="table",
                ),
            ),
            rename={
                "feature": "Feature",
                "Value #A": "MAU",
                "Value #B": "WAU",
                "Value #C": "DAU",
                "Value #D": "Stickiness",
                "Value #E": "Adoption",
                "Value #F": "Time to first use p50",
                "Value #G": "Uses in range",
            },
            order=[
                "feature",
                "Value #A",
                "Value #B",
                "Value #C",
                "Value #D",
                "Value #E",
                "Value #F",
                "Value #G",
            ],
            sort_by=("MAU", True),
            column_units={
                "MAU": "short",
                "WAU": "short",
                "DAU": "short",
                "Stickiness": "percentunit",
                "Adoption": "percentunit",
                "Time to first use p50": "s",
                "Uses in range": "short",
            },
            gauge_columns=["Adoption", "Stickiness"],
        ),
        24,
        12,
    )

    variables = [
        datasource_var(),
        query_var(
            "feature",
            "Feature",
            "label_values(adoptstream_active_users, feature)",
            description='"*" is any feature.',
        ),
        query_var(
            "cohort",
            "Cohort",
            'label_values(adoptstream_exposed_users{feature=~"$feature"}, cohort)',
            description="Rollout wave / department / site / ring of the user's earliest exposure.",
        ),
    ]
    return dashboard(
        UID_ADOPTION,
        "adoptstream / Adoption overview",
        "Feature adoption for product owners: active users, stickiness, adoption per feature and cohort, "
        "time to first use. Exact values from the adoptstream workers, summed over workers.",
        lay,
        variables,
        time_from="now-7d",
    )


def rollouts() -> dict[str, Any]:
    sel = 'rollout=~"$rollout", wave=~"$wave", owner=~"$owner"'
    by = "max by (rollout, feature, wave, owner)"
    switch_sel = 'rollout=~"$rollout", owner=~"$owner"'
    switch_by = "max by (rollout, feature, old_feature, owner)"
    alerts = 'ALERTS{alertname=~"Adoption.*", alertstate="firing"}'
    lay = Layout()

    lay.row("Now")
    lay.add(
        stat(
            "Adoption alerts firing",
            "Alerts from the adoption rules (alertname Adoption*) firing now.",
            [q(f"count({alerts}) or vector(0)", "firing")],
            thresholds=[(None, "green"), (1, "red")],
            color_mode="background",
            graph=False,
        ),
        4,
        8,
    )
    lay.add(
        table(
            "Firing adoption alerts",
            'ALERTS{alertname=~"Adoption.*"} firing now, with the rollout, wave and owner they are about.',
            [q(alerts, instant=True, fmt="table")],
            merge=False,
            hide=["Value", "alertstate"],
            order=["alertname", "severity", "rollout", "feature", "wave", "owner"],
        ),
        20,
        8,
    )
    lay.add(
        table(
            "Rollout waves now",
            "One row per rollout wave: adoption among the wave's exposed users, the adoption its schedule "
            "expects by now, the final target, the difference to expected (negative: behind schedule), "
            "the exposed users, the time since the wave started and until its deadline (negative: past it).",
            refs(
                q(f"{by} (adoptstream:rollout_wave_adoption:ratio{{{sel}}})", instant=True, fmt="table"),
                q(f"{by} (adoptstream:rollout_wave_expected:ratio{{{sel}}})", instant=True, fmt="table"),
                q(f"{by} (adoptstream:rollout_wave_target:ratio{{{sel}}})", instant=True, fmt="table"),
                q(
                    f"{by} (adoptstream:rollout_wave_adoption:ratio{{{sel}}})"
                    f" - {by} (adoptstream:rollout_wave_expected:ratio{{{sel}}})",
                    instant=True,
                    fmt="table",
                ),
                q(f"{by} (adoptstream:rollout_wave_exposed:users{{{sel}}})", instant=True, fmt="table"),
                q(
                    f"time() - {by} (adoptstream:rollout_wave_start:timestamp_seconds{{{sel}}})",
                    instant=True,
                    fmt="table",
                ),
                q(
                    f"{by} (adoptstream:rollout_wave_deadline:timestamp_seconds{{{sel}}}) - time()",
                    instant=True,
                    fmt="table",
                ),
            ),
            rename={
                "rollout": "Rollout",
                "feature": "Feature",
                "wave": "Wave",
                "owner": "Owner",
                "Value #A": "Adoption",
                "Value #B": "Expected",
                "Value #C": "Target",
                "Value #D": "vs expected",
                "Value #E": "Exposed users",
                "Value #F": "Since start",
                "Value #G": "Due in",
            },
            order=[
                "rollout",
                "feature",
                "wave",
                "owner",
                "Value #A",
                "Value #B",
                "Value #C",
                "Value #D",
                "Value #E",
                "Value #F",
                "Value #G",
            ],
            sort_by=("vs expected", False),
            column_units={
                "Adoption": "percentunit",
                "Expected": "percentunit",
                "Target": "percentunit",
                "vs expected": "percentunit",
                "Exposed users": "short",
                "Since start": "dtdurations",
                "Due in": "dtdurations",
            },
            gauge_columns=["Adoption"],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "vs expected"},
                    "properties": [
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "thresholds", "value": _thresholds([(None, "red"), (0, "green")])},
                    ],
                }
            ],
        ),
        24,
        9,
    )

    lay.row("Adoption vs expected vs target, per rollout")
    panel = timeseries(
        "$rollout: adoption (solid) vs expected (dashed) vs target (dotted)",
        "One panel per selected rollout. Staged rollouts, per wave: adoption among the wave's exposed users "
        "(adoptstream:rollout_wave_adoption:ratio), the adoption the plan expects by now "
        "(…_expected:ratio) and the wave's target (…_target:ratio). Parallel rollouts: the new feature's "
        "share of the users of old or new (adoptstream:rollout_switchover:ratio) with its expected and "
        "target share.",
        refs(
            q(f"{by} (adoptstream:rollout_wave_adoption:ratio{{{sel}}})", "{{wave}} adoption"),
            q(f"{by} (adoptstream:rollout_wave_expected:ratio{{{sel}}})", "{{wave}} expected"),
            q(f"{by} (adoptstream:rollout_wave_target:ratio{{{sel}}})", "{{wave}} target"),
            q(f"{switch_by} (adoptstream:rollout_switchover:ratio{{{switch_sel}}})", "switch-over"),
            q(
                f"{switch_by} (adoptstream:rollout_switchover_expected:ratio{{{switch_sel}}})",
                "switch-over expected",
            ),
            q(
                f"{switch_by} (adoptstream:rollout_switchover_target:ratio{{{switch_sel}}})",
                "switch-over target",
            ),
        ),
        unit="percentunit",
        maximum=1,
        overrides=[regex_style(".* expected$", DASHED), regex_style(".* target$", DOTTED)],
    )
    panel["repeat"] = "rollout"
    panel["repeatDirection"] = "h"
    panel["maxPerRow"] = 2
    lay.add(panel, 12, 9)
    lay.newline()
    lay.add(
        timeseries(
            "Exposed users per wave",
            "Users exposed to the rollout's feature in each wave (adoptstream:rollout_wave_exposed:users).",
            [q(f"{by} (adoptstream:rollout_wave_exposed:users{{{sel}}})", "{{rollout}} {{wave}}")],
        ),
        12,
        8,
    )
    lay.add(
        state_timeline(
            "Adoption alerts over time",
            "When each adoption alert was pending or firing.",
            # One row per alert: 1 while firing, 0.5 while only pending (`or` keeps the firing value).
            [
                q(
                    'max by (alertname, rollout, wave) (ALERTS{alertname=~"Adoption.*", alertstate="firing"})'
                    " or max by (alertname, rollout, wave)"
                    ' (ALERTS{alertname=~"Adoption.*", alertstate="pending"})'
                    " * 0.5",
                    "{{alertname}} {{rollout}} {{wave}}",
                )
            ],
            mappings=value_map({"1": ("firing", "red"), "0.5": ("pending", "orange")}),
            thresholds=[(None, "orange"), (1, "red")],
        ),
        12,
        8,
    )

    lay.row("Parallel rollouts: switch-over from the old feature")
    switch = f"{switch_by} (adoptstream:rollout_switchover:ratio{{{switch_sel}}})"
    switch_legend = "{{rollout}}: {{old_feature}} → {{feature}}"
    lay.add(
        timeseries(
            "Switch-over share over time",
            "For rollouts that replace an old feature with a new one run in parallel: the new feature's "
            "share of the active users of old or new (adoptstream:rollout_switchover:ratio; 100 %: "
            "everybody has switched), and the share the plan expects by now (dashed).",
            refs(
                q(switch, switch_legend),
                q(
                    f"{switch_by} (adoptstream:rollout_switchover_expected:ratio{{{switch_sel}}})",
                    switch_legend + " expected",
                ),
            ),
            unit="percentunit",
            maximum=1,
            overrides=[regex_style(".* expected$", DASHED)],
        ),
        16,
        8,
    )
    lay.add(
        table(
            "Switch-over now",
            "Per parallel rollout: the current switch-over share, the share expected by now, the target and "
            "how long until the plan's deadline (negative: past it).",
            refs(
                q(switch, instant=True, fmt="table"),
                q(
                    f"{switch_by} (adoptstream:rollout_switchover_expected:ratio{{{switch_sel}}})",
                    instant=True,
                    fmt="table",
                ),
                q(
                    f"{switch_by} (adoptstream:rollout_switchover_target:ratio{{{switch_sel}}})",
                    instant=True,
                    fmt="table",
                ),
                q(
                    f"{switch_by} (adoptstream:rollout_switchover_deadline:timestamp_seconds{{{switch_sel}}})"
                    " - time()",
                    instant=True,
                    fmt="table",
                ),
            ),
            rename={
                "rollout": "Rollout",
                "old_feature": "Old feature",
                "feature": "New feature",
                "owner": "Owner",
                "Value #A": "Switched",
                "Value #B": "Expected",
                "Value #C": "Target",
                "Value #D": "Due in",
            },
            order=[
                "rollout",
                "old_feature",
                "feature",
                "owner",
                "Value #A",
                "Value #B",
                "Value #C",
                "Value #D",
            ],
            column_units={
                "Switched": "percentunit",
                "Expected": "percentunit",
                "Target": "percentunit",
                "Due in": "dtdurations",
            },
            gauge_columns=["Switched"],
        ),
        8,
        8,
    )

    wave_metric = "adoptstream:rollout_wave_adoption:ratio"
    switch_metric = "adoptstream:rollout_switchover:ratio"
    variables = [
        datasource_var(),
        query_var("owner", "Owner", f'label_values({{__name__=~"{wave_metric}|{switch_metric}"}}, owner)'),
        query_var(
            "rollout",
            "Rollout",
            f'label_values({{__name__=~"{wave_metric}|{switch_metric}", owner=~"$owner"}}, rollout)',
            description="Staged rollouts (waves) and parallel rollouts (switch-over from an old feature).",
        ),
        query_var(
            "wave", "Wave", f'label_values({wave_metric}{{rollout=~"$rollout", owner=~"$owner"}}, wave)'
        ),
    ]
    return dashboard(
        UID_ROLLOUTS,
        "adoptstream / Rollouts",
        "Staged rollouts: per wave, adoption vs the schedule's expectation and the target; switch-over of "
        "parallel rollouts; the adoption alerts that fire on them.",
        lay,
        variables,
        time_from="now-14d",
    )


def operations() -> dict[str, Any]:
    sel = 'job=~"$job", instance=~"$instance"'
    lay = Layout()

    lay.row("Health")
    lay.add(
        stat(
            "Workers up",
            "Workers whose /metrics the last scrape reached (up), those of them serving exact numbers "
            "(ready: not restoring state, adoptstream_ready), out of all scraped.",
            refs(
                q('sum(up{job=~"$job"})', "up"),
                q('sum(adoptstream_ready{job=~"$job"})', "ready"),
                q('count(up{job=~"$job"})', "scraped"),
            ),
            thresholds=[(None, "red"), (1, "green")],
            graph=False,
            text_mode="value_and_name",
        ),
        4,
        6,
    )
    lay.add(
        stat(
            "Event-time freshness",
            "Now minus the newest event time any worker has seen (time() - "
            "adoptstream_last_event_timestamp_seconds): how far behind real time the newest data is. "
            "Grows when apps stop publishing or the workers stop consuming.",
            [q(f"time() - max(adoptstream_last_event_timestamp_seconds{{{sel}}})", "freshness")],
            unit="s",
            thresholds=[(None, "green"), (300, "orange"), (900, "red")],
        ),
        4,
        6,
    )
    lay.add(
        stat(
            "Consumer lag",
            "Records not yet consumed, over all partitions and topics.",
            [q(f"sum(adoptstream_consumer_lag_records{{{sel}}})", "lag")],
            thresholds=[(None, "green"), (10000, "orange"), (100000, "red")],
        ),
        4,
        6,
    )
    lay.add(
        stat(
            "Dead letters / s",
            "Messages sent to the dead-letter topic (invalid or future), all reasons.",
            [q(f"sum(rate(adoptstream_dead_letters_total{{{sel}}}[$__rate_interval])) or vector(0)", "dlq")],
            unit="suffix: msg/s",
            thresholds=[(None, "green"), (0.1, "orange"), (1, "red")],
            decimals=2,
        ),
        4,
        6,
    )
    lay.add(
        stat(
            "Label overflow",
            "Feature or cohort values folded into the overflow value because the label cap was reached "
            "(adoptstream_label_overflow_values). Non-zero: raise ADOPTSTREAM_MAX_FEATURES / _MAX_COHORTS or "
            "find the app sending unbounded values.",
            [q(f"max by (label) (adoptstream_label_overflow_values{{{sel}}})", "{{label}}")],
            thresholds=[(None, "green"), (1, "red")],
            graph=False,
        ),
        4,
        6,
    )
    lay.add(
        table(
            "Versions",
            "Workers per adoptstream version (adoptstream_build_info).",
            [q(f"count by (version) (adoptstream_build_info{{{sel}}})", instant=True, fmt="table")],
            merge=False,
            rename={"version": "Version", "Value": "Workers"},
        ),
        4,
        6,
    )
    lay.add(
        state_timeline(
            "Workers up and ready over time",
            'Per worker: up (up{job="adoptstream"}: Prometheus could scrape it) and ready '
            "(adoptstream_ready: it serves exact numbers; 0 while it restores its state).",
            refs(
                q(f"max by (instance) (up{{{sel}}})", "{{instance}} up"),
                q(f"max by (instance) (adoptstream_ready{{{sel}}})", "{{instance}} ready"),
            ),
            mappings=value_map({"0": ("no", "red"), "1": ("yes", "green")}),
            thresholds=[(None, "red"), (1, "green")],
        ),
        12,
        6,
    )
    lay.add(
        timeseries(
            "Freshness per worker",
            "Event time: now minus the newest event time the worker has accepted. Processing: now minus the "
            "wall-clock time the worker last processed a record (idle topics make both grow).",
            refs(
                q(
                    f"time() - max by (instance) (adoptstream_last_event_timestamp_seconds{{{sel}}})",
                    "{{instance}} event time",
                ),
                q(
                    f"time() - max by (instance) (adoptstream_last_processed_timestamp_seconds{{{sel}}})",
                    "{{instance}} processing",
                ),
            ),
            unit="s",
            overrides=[regex_style(".* processing$", DASHED)],
        ),
        12,
        6,
    )

    lay.row("Operational alerts")
    ops_alerts = 'ALERTS{alertname=~"Adoptstream.*", alertstate="firing"}'
    lay.add(
        stat(
            "Operational alerts firing",
            "Alerts of the operational rules (alertname Adoptstream*: worker down, stalled, lag, dead "
            "letters, label overflow) firing now. Most of them hold back (inhibit) the adoption alerts "
            "while they fire.",
            [q(f"count({ops_alerts}) or vector(0)", "firing")],
            thresholds=[(None, "green"), (1, "red")],
            color_mode="background",
            graph=False,
        ),
        4,
        6,
    )
    lay.add(
        table(
            "Firing operational alerts",
            'ALERTS{alertname=~"Adoptstream.*"} firing now.',
            [q(ops_alerts, instant=True, fmt="table")],
            merge=False,
            hide=["Value", "alertstate"],
            order=["alertname", "severity", "instance", "topic", "reason", "label"],
        ),
        20,
        6,
    )

    lay.row("Throughput")
    lay.add(
        timeseries(
            "Events by outcome",
            "Messages per second by outcome: accepted, duplicate, invalid, future "
            "(adoptstream_events_total).",
            [
                q(
                    f"sum by (outcome) (rate(adoptstream_events_total{{{sel}}}[$__rate_interval]))",
                    "{{outcome}}",
                )
            ],
            unit="suffix: msg/s",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Dead letters by reason",
            "Messages per second sent to <topic>.dlq, by reason (adoptstream_dead_letters_total).",
            [
                q(
                    f"sum by (reason) (rate(adoptstream_dead_letters_total{{{sel}}}[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            unit="suffix: msg/s",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Processing rate per stage",
            "Records per second through each stage (ingest: validation and dead-lettering; state: the "
            "per-user state update), per worker.",
            [
                q(
                    f"sum by (instance, stage) (rate(adoptstream_processed_records_total{{{sel}}}"
                    "[$__rate_interval]))",
                    "{{instance}} {{stage}}",
                )
            ],
            unit="suffix: rec/s",
        ),
        12,
        8,
    )
    batch = "adoptstream_batch_duration_seconds_bucket"
    lay.add(
        timeseries(
            "Batch duration p99 / p50 per stage",
            "histogram_quantile over the rate of adoptstream_batch_duration_seconds, all workers.",
            refs(
                q(
                    f"histogram_quantile(0.99, sum by (stage, le) (rate({batch}{{{sel}}}"
                    "[$__rate_interval])))",
                    "{{stage}} p99",
                ),
                q(
                    f"histogram_quantile(0.5, sum by (stage, le) (rate({batch}{{{sel}}}[$__rate_interval])))",
                    "{{stage}} p50",
                ),
            ),
            unit="s",
            overrides=[regex_style(".* p50$", DASHED)],
        ),
        12,
        8,
    )

    lay.row("Kafka")
    lay.add(
        timeseries(
            "Consumer lag per partition",
            "Records behind the end of each partition. max by (topic, partition): a partition has one owner, "
            "and max keeps a just-reassigned partition from counting twice.",
            [
                q(
                    f"max by (topic, partition) (adoptstream_consumer_lag_records{{{sel}}})",
                    "{{topic}}/{{partition}}",
                )
            ],
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Assigned partitions per worker",
            "Partitions each worker owns (adoptstream_assigned_partitions); they should be spread evenly.",
            [
                q(
                    f"sum by (instance, topic) (adoptstream_assigned_partitions{{{sel}}})",
                    "{{instance}} {{topic}}",
                )
            ],
            stack=True,
            decimals=0,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Rebalances",
            "Consumer-group rebalances per group (increase of adoptstream_rebalances_total). Frequent "
            "rebalances: workers restarting or missing heartbeats.",
            [
                q(
                    f"sum by (group) (increase(adoptstream_rebalances_total{{{sel}}}[$__rate_interval]))",
                    "{{group}}",
                )
            ],
            bars=True,
            decimals=0,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Label overflow values",
            "Values folded into the overflow label value, per worker and label (feature, cohort). Each "
            "worker applies the cap to the values it has seen, so the same value can be folded on several.",
            [
                q(
                    f"max by (instance, label) (adoptstream_label_overflow_values{{{sel}}})",
                    "{{instance}} {{label}}",
                )
            ],
            decimals=0,
        ),
        12,
        8,
    )

    variables = [
        datasource_var(),
        query_var(
            "job",
            "Job",
            "label_values(adoptstream_build_info, job)",
            multi=False,
            include_all=False,
            current="adoptstream",
            description="Prometheus scrape job of the workers (adoptstream in the shipped configs).",
        ),
        query_var("instance", "Worker", 'label_values(adoptstream_build_info{job=~"$job"}, instance)'),
    ]
    rebalance_annotation = {
        "name": "Rebalances",
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": "orange",
        "expr": f"sum by (group) (changes(adoptstream_rebalances_total{{{sel}}}[2m])) > 0",
        "step": "1m",
        "titleFormat": "Rebalance",
        "textFormat": "{{group}}",
        "tagKeys": "group",
        "useValueForTime": False,
    }
    return dashboard(
        UID_OPERATIONS,
        "adoptstream / Operations",
        "For SREs: are the workers up, keeping up and healthy? Events by outcome, dead letters, consumer "
        "lag, processing rate, batch duration, freshness, rebalances, partition assignment, label overflow.",
        lay,
        variables,
        time_from="now-6h",
        annotations=[rebalance_annotation],
        refresh="30s",
    )


DASHBOARDS = {
    "adoption-overview.json": adoption_overview,
    "rollouts.json": rollouts,
    "operations.json": operations,
}


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = args.out / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("stale (run python grafana/build_dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
