#!/usr/bin/env python3
"""Builds the provisioned Grafana dashboards in grafana/dashboards/ with grafana-foundation-sdk.

    python grafana/build_dashboards.py          # rewrite the JSON files
    python grafana/build_dashboards.py --check  # exit 1 when a committed file differs from this source

The JSON files are what Grafana loads (grafana/provisioning/dashboards/adoptstream.yml points at them), and
tests/unit/test_grafana_dashboards.py checks that they match this script, so edit here, not in the JSON
(provisioned dashboards cannot be saved from the UI: `allowUiUpdates: false`). The builders are Grafana's
own (grafana-foundation-sdk, pinned in dev/pyproject.toml: another version may write other defaults);
this file only holds the boards' content and a few shorthands. One thing the SDK does not model is
written here by hand: the Prometheus fields of an annotation (`PrometheusAnnotation`).

Aggregation rule from the metric contract: each worker holds a disjoint part of the users, so every
adoption number is `sum` over workers (`sum by (...)` / `sum without (instance, job)`); the recording
rules (`adoptstream:*`) are already aggregated and are used as they are.

A panel that may rightly show nothing (no alert firing) says so with `may_be_empty=...`: the text is
Grafana's "no value" message, and tests/e2e/test_dashboards_live.py accepts an empty result only from
such panels, after checking the reason (Prometheus holds no such alert).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    heatmap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["adoptstream"]

UID_ADOPTION = "adoptstream-adoption"
UID_ROLLOUTS = "adoptstream-rollouts"
UID_OPERATIONS = "adoptstream-operations"
UID_ENGAGEMENT = "adoptstream-engagement"

# The value a multi-select variable takes for "All": a regex, not a list of every value (a thousand
# features would make every query a thousand-way alternation). `.*` also matches series whose label is
# empty or absent, which a rollout's `owner` may be.
ALL = ".*"

Steps = list[tuple[float | None, str]]
Target = prometheus.Dataquery
PanelBuilder = Any  # the SDK's panel builders share no typed base beyond cog's Builder


# -------------------------------------------------------------------------------------------- targets
def q(
    expr: str, legend: str = "__auto", *, instant: bool = False, fmt: str = "time_series", interval: str = ""
) -> Target:
    """A Prometheus query in code mode; refIds are given by the panel (A, B, ...)."""
    target = (
        prometheus.Dataquery()
        .datasource(DS)
        .editor_mode(pm.QueryEditorMode.CODE)
        .expr(expr)
        .legend_format(legend)
        .format(pm.PromQueryFormat(fmt))
    )
    target = target.instant() if instant else target.range()
    return target.interval(interval) if interval else target


# --------------------------------------------------------------------------------------------- panels
def thresholds(steps: Steps | None = None) -> dash_b.ThresholdsConfig:
    steps = steps or [(None, "green")]
    return (
        dash_b.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def color(mode: str) -> dash_b.FieldColor:
    return dash_b.FieldColor().mode(dm.FieldColorModeId(mode))


def _common(
    panel: PanelBuilder, title: str, description: str, targets: Sequence[Target], may_be_empty: str | None
) -> PanelBuilder:
    panel = panel.title(title).description(description).datasource(DS)
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    if may_be_empty is not None:
        panel = panel.no_value(may_be_empty)
    return panel


def prop(name: str, value: object) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val=name, value=value)


DASHED = {"fill": "dash", "dash": [10, 10]}
DOTTED = {"fill": "dot", "dash": [0, 10]}


def line_style(pattern: str, style: dict[str, Any]) -> tuple[str, list[dm.DynamicConfigValue]]:
    """An override: series whose name matches ``pattern`` are drawn dashed or dotted."""
    return pattern, [prop("custom.lineStyle", style)]


def timeseries_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str = "short",
    stack: bool = False,
    bars: bool = False,
    minimum: float | None = 0,
    maximum: float | None = None,
    decimals: int | None = None,
    styles: Sequence[tuple[str, list[dm.DynamicConfigValue]]] = (),
    legend_calcs: Sequence[str] = ("lastNotNull", "max"),
    steps: Steps | None = None,
    may_be_empty: str | None = None,
) -> timeseries.Panel:
    panel = _common(timeseries.Panel(), title, description, targets, may_be_empty)
    panel = (
        panel.color_scheme(color("palette-classic"))
        .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(80 if bars else (25 if stack else 10))
        .gradient_mode(cm.GraphGradientMode.NONE)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .line_interpolation(cm.LineInterpolation.LINEAR)
        .axis_placement(cm.AxisPlacement.AUTO)
        .axis_border_show(False)
        .stacking(
            common_b.StackingConfig()
            .mode(cm.StackingMode.NORMAL if stack else cm.StackingMode.NONE)
            .group("A")
        )
        .thresholds_style(common_b.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.OFF))
        .unit(unit)
        .thresholds(thresholds(steps))
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .calcs(list(legend_calcs))
        )
        .tooltip(common_b.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if decimals is not None:
        panel = panel.decimals(decimals)
    for pattern, properties in styles:
        panel = panel.override_by_regexp(pattern, properties)
    return panel


def stat_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str = "short",
    steps: Steps | None = None,
    decimals: int | None = None,
    graph: bool = True,
    color_mode: str = "value",
    text_mode: str = "auto",
    may_be_empty: str | None = None,
) -> stat.Panel:
    panel = _common(stat.Panel(), title, description, targets, may_be_empty)
    panel = (
        panel.color_scheme(color("thresholds"))
        .unit(unit)
        .thresholds(thresholds(steps))
        .mappings([])
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(cm.BigValueColorMode(color_mode))
        .graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
        .text_mode(cm.BigValueTextMode(text_mode))
        .wide_layout(True)
        .show_percent_change(False)
    )
    return panel.decimals(decimals) if decimals is not None else panel


def bargauge_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str = "percentunit",
    minimum: float = 0,
    maximum: float | None = 1,
    steps: Steps | None = None,
    decimals: int | None = None,
    all_values: bool = False,
    transformations: Sequence[dm.DataTransformerConfig] = (),
    may_be_empty: str | None = None,
) -> bargauge.Panel:
    """Horizontal bars, one per series (``all_values``: one per row of a table-format query)."""
    panel = _common(bargauge.Panel(), title, description, targets, may_be_empty)
    panel = (
        panel.color_scheme(color("thresholds"))
        .unit(unit)
        .min(minimum)
        .thresholds(thresholds(steps))
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(all_values))
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .value_mode(cm.BarGaugeValueMode.COLOR)
        .name_placement(cm.BarGaugeNamePlacement.AUTO)
        .show_unfilled(True)
        .sizing(cm.BarGaugeSizing.AUTO)
        .min_viz_height(16)
        .min_viz_width(8)
        .max_viz_height(300)
    )
    for transformation in transformations:
        panel = panel.with_transformation(transformation)
    if maximum is not None:
        panel = panel.max(maximum)
    return panel.decimals(decimals) if decimals is not None else panel


def transformation(kind: str, options: dict[str, Any]) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(id_val=kind, options=options)


def table_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    rename: dict[str, str] | None = None,
    order: Sequence[str] = (),
    hide: Sequence[str] = (),
    sort_by: tuple[str, bool] | None = None,
    column_units: dict[str, str] | None = None,
    gauge_columns: Sequence[str] = (),
    merge: bool = True,
    colored: dict[str, Steps] | None = None,
    may_be_empty: str | None = None,
) -> table.Panel:
    """A table of instant queries (format table), merged on their labels into one row per series."""
    panel = _common(table.Panel(), title, description, targets, may_be_empty)
    if merge:
        panel = panel.with_transformation(transformation("merge", {}))
    organize: dict[str, Any] = {
        "excludeByName": {"Time": True, "__name__": True, **{name: True for name in hide}},
        "renameByName": rename or {},
    }
    if order:
        organize["indexByName"] = {name: i for i, name in enumerate(order)}
    panel = panel.with_transformation(transformation("organize", organize))
    if sort_by:
        sort = {"fields": {}, "sort": [{"field": sort_by[0], "desc": sort_by[1]}]}
        panel = panel.with_transformation(transformation("sortBy", sort))
    for column, unit in (column_units or {}).items():
        properties = [prop("unit", unit)]
        if column in gauge_columns:
            properties += [
                prop("min", 0),
                prop("max", 1),
                prop("custom.cellOptions", {"type": "gauge", "mode": "basic"}),
                prop("color", {"mode": "continuous-RdYlGr"}),
            ]
        panel = panel.override_by_name(column, properties)
    for column, steps in (colored or {}).items():
        panel = panel.override_by_name(
            column,
            [
                prop("custom.cellOptions", {"type": "color-text"}),
                prop("thresholds", thresholds(steps).build()),
            ],
        )
    return (
        panel.align(cm.FieldTextAlignment.AUTO)
        .cell_options(cm.TableAutoCellOptions())
        .inspect(False)
        .filterable(True)
        .thresholds(thresholds())
        .color_scheme(color("thresholds"))
        .show_header(True)
        .cell_height(cm.TableCellHeight.SM)
        .footer(common_b.TableFooterOptions().show(False).reducer(["sum"]).fields("").count_rows(False))
    )


def heatmap_panel(
    title: str, description: str, targets: Sequence[Target], *, unit: str = "s"
) -> heatmap.Panel:
    """Cumulative `le` buckets as they are (no calculation by Grafana), one column per time step."""
    panel = _common(heatmap.Panel(), title, description, targets, None)
    return (
        panel.max_data_points(60)
        .hide_from(common_b.HideSeriesConfig().legend(False).tooltip(False).viz(False))
        .calculate(False)
        .cell_gap(1)
        .cell_values(heatmap.CellValues().unit("short"))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .scale(hm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .reverse(False)
        )
        .exemplars_color("rgba(255,0,255,0.7)")
        .filter_values(heatmap.FilterValueRange().le(1e-9))
        .show_legend()
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.AUTO))
        .mode(cm.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .show_color_scale(False)
        .y_axis(heatmap.YAxisConfig().axis_placement(cm.AxisPlacement.LEFT).unit(unit).reverse(False))
    )


def timeline_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    mapping: dict[str, tuple[str, str]],
    steps: Steps | None = None,
    may_be_empty: str | None = None,
) -> statetimeline.Panel:
    """One row per series; ``mapping`` {"0": ("down", "red")} names and colours the values."""
    panel = _common(statetimeline.Panel(), title, description, targets, may_be_empty)
    results = {
        value: dm.ValueMappingResult(text=text, color=colour, index=i)
        for i, (value, (text, colour)) in enumerate(mapping.items())
    }
    return (
        panel.color_scheme(color("thresholds"))
        .thresholds(thresholds(steps))
        .mappings([dm.ValueMap(options=results)])
        .fill_opacity(75)
        .line_width(0)
        .show_value(cm.VisibilityMode.NEVER)
        .merge_values(True)
        .align_value(cm.TimelineValueAlignment.LEFT)
        .row_height(0.9)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(False)
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
        )
        .tooltip(common_b.VizTooltipOptions().mode(cm.TooltipDisplayMode.SINGLE).sort(cm.SortOrder.NONE))
    )


# ------------------------------------------------------------------------------------------ variables
def datasource_var() -> dash_b.DatasourceVariable:
    return (
        dash_b.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(dm.VariableOption(selected=False, text="Prometheus", value="prometheus"))
        .multi(False)
        .include_all(False)
        .regex("")
    )


def query_var(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = True,
    include_all: bool = True,
    current: str | None = None,
    description: str = "",
) -> dash_b.QueryVariable:
    if current is None:
        option = dm.VariableOption(selected=True, text=["All"], value=["$__all"])
    else:
        option = dm.VariableOption(selected=True, text=current, value=current)
    var = (
        dash_b.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DS)
        # A plain string: Grafana parses it into its variable editor's fields when the editor opens.
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)  # new features and waves show up without a reload
        .regex("")
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
        .current(option)
    )
    return var.all_value(ALL) if include_all else var


class PrometheusAnnotation(dm.AnnotationQuery):
    """An annotation from a Prometheus query: the SDK models its `expr`; the Prometheus datasource also
    reads `step`, `titleFormat`, `textFormat`, `tagKeys` and `useValueForTime` from the annotation."""

    def __init__(
        self, *, step: str, title_format: str, text_format: str, tag_keys: str, **fields: Any
    ) -> None:
        super().__init__(**fields)
        self.prometheus_fields = {
            "step": step,
            "titleFormat": title_format,
            "textFormat": text_format,
            "tagKeys": tag_keys,
            "useValueForTime": False,
        }

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), **self.prometheus_fields}


class PrometheusAnnotationBuilder(dash_b.AnnotationQuery):
    def __init__(self, name: str, expr: str, *, step: str, title: str, text: str, tag_keys: str) -> None:
        self._internal = PrometheusAnnotation(
            step=step, title_format=title, text_format=text, tag_keys=tag_keys, name=name, datasource=DS
        )
        self.expr(expr)


# ----------------------------------------------------------------------------------------- dashboards
@dataclass
class Board:
    """A dashboard's rows and panels in reading order; panels fill Grafana's 24 columns left to right."""

    uid: str
    title: str
    description: str
    items: list[tuple[str, PanelBuilder, int, int]] = field(default_factory=list)

    def row(self, title: str) -> None:
        self.items.append(("row", dash_b.Row(title).collapsed(False), 24, 1))

    def add(self, panel: PanelBuilder, w: int, h: int) -> None:
        used = sum(width for kind, _, width, _ in self._since_row() if kind == "panel") % 24
        assert used + w <= 24, f"{self.uid}: a panel would wrap mid-line: lay the line out to 24 columns"
        self.items.append(("panel", panel.span(w).height(h), w, h))

    def _since_row(self) -> list[tuple[str, PanelBuilder, int, int]]:
        rows = [i for i, item in enumerate(self.items) if item[0] == "row"]
        return self.items[rows[-1] + 1 :] if rows else self.items

    def build(
        self,
        variables: Sequence[Any],
        *,
        time_from: str = "now-24h",
        annotations: Sequence[dash_b.AnnotationQuery] = (),
        refresh: str = "1m",
    ) -> dm.Dashboard:
        builtin = (
            dash_b.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        board = (
            dash_b.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags(TAGS)
            .editable()
            .tooltip(dm.DashboardCursorSync.CROSSHAIR)
            .timezone("utc")
            .time(time_from, "now")
            .timepicker(dash_b.TimePicker().refresh_intervals(["30s", "1m", "5m", "15m", "1h"]))
            .refresh(refresh)
            .fiscal_year_start_month(0)
            .live_now(False)
            .week_start("")
            .version(1)
            .link(
                dash_b.DashboardLink("adoptstream")
                .type(dm.DashboardLinkType.DASHBOARDS)
                .tags(TAGS)
                .as_dropdown(True)
                .include_vars(False)
                .keep_time(True)
                .icon("external link")
                .target_blank(False)
                .tooltip("")
                .url("")
            )
            .annotations([builtin, *annotations])
            .variables(list(variables))
        )
        for kind, item, _, _ in self.items:
            board = board.with_row(item) if kind == "row" else board.with_panel(item)
        model = board.build()
        for number, panel in enumerate(model.panels or [], start=1):
            panel.id_val = number  # stable ids: Grafana keys panel links (viewPanel=) by them
        return model


PCT: Steps = [(None, "red"), (0.2, "orange"), (0.5, "yellow"), (0.8, "green")]


def adoption_overview() -> dm.Dashboard:
    f = 'feature=~"$feature"'
    fc = 'feature=~"$feature", cohort=~"$cohort"'
    b = Board(
        UID_ADOPTION,
        "adoptstream / Adoption overview",
        "Feature adoption for product owners: active users, stickiness, adoption per feature and cohort, "
        "time to first use. Exact values from the adoptstream workers, summed over workers.",
    )

    b.row('Headline: all features (feature="*")')
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
        expr = f'sum(adoptstream_active_users{{feature="*", window="{window}"}})'
        b.add(stat_panel(title, desc, [q(expr, title)]), 4, 5)
    b.add(
        stat_panel(
            "Stickiness (DAU / MAU)",
            "Share of the month's active users who were active in the last day (recording rule "
            "adoptstream:stickiness:ratio).",
            [q('adoptstream:stickiness:ratio{feature="*"}', "stickiness")],
            unit="percentunit",
            decimals=1,
            steps=[(None, "orange"), (0.1, "yellow"), (0.2, "green")],
        ),
        4,
        5,
    )
    b.add(
        stat_panel(
            "Signed-up users",
            'Distinct users with at least one signup event (exposed_users for feature="*"), all cohorts.',
            [q('sum(adoptstream_exposed_users{feature="*"})', "signed up")],
        ),
        4,
        5,
    )
    b.add(
        stat_panel(
            "Overall adoption",
            "Signed-up users who used any feature at least once (adoptstream:adoption_feature:ratio "
            'for feature="*").',
            [q('adoptstream:adoption_feature:ratio{feature="*"}', "adoption")],
            unit="percentunit",
            decimals=1,
            steps=PCT,
        ),
        4,
        5,
    )

    b.row("Active users per feature")
    for title, window in (("DAU per feature", "1d"), ("WAU per feature", "7d"), ("MAU per feature", "30d")):
        b.add(
            timeseries_panel(
                title,
                f"Distinct users with at least one accepted use of the feature in the {window} window, "
                "summed over all workers (each worker holds a disjoint part of the users).",
                [q(f'sum by (feature) (adoptstream_active_users{{{f}, window="{window}"}})', "{{feature}}")],
            ),
            8,
            8,
        )
    b.add(
        timeseries_panel(
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
    b.add(
        timeseries_panel(
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

    b.row("Adoption")
    b.add(
        bargauge_panel(
            "Adoption ratio per feature",
            "adopted_users / exposed_users over all cohorts (recording rule "
            "adoptstream:adoption_feature:ratio): of the users given or shown the feature, the share who "
            "used it at least once.",
            [q(f"sort_desc(adoptstream:adoption_feature:ratio{{{f}}})", "{{feature}}", instant=True)],
            steps=PCT,
        ),
        8,
        10,
    )
    b.add(
        table_panel(
            "Adoption ratio per feature and cohort",
            "adoptstream:adoption:ratio with the exposed and adopted users behind it, per cohort (the cohort "
            "of the user's earliest exposure to the feature, or `unassigned`).",
            [
                q(f"adoptstream:adoption:ratio{{{fc}}}", instant=True, fmt="table"),
                q(f"sum by (feature, cohort) (adoptstream_exposed_users{{{fc}}})", instant=True, fmt="table"),
                q(f"sum by (feature, cohort) (adoptstream_adopted_users{{{fc}}})", instant=True, fmt="table"),
            ],
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
    b.add(
        timeseries_panel(
            "Adoption ratio per feature over time",
            "adoptstream:adoption_feature:ratio per feature.",
            [q(f"adoptstream:adoption_feature:ratio{{{f}}}", "{{feature}}")],
            unit="percentunit",
            maximum=1,
        ),
        12,
        8,
    )
    b.add(
        timeseries_panel(
            "Exposed vs adopted users (selected cohorts)",
            "Users exposed to the feature (dashed) and those of them who used it (solid), summed over the "
            "selected cohorts and over all workers.",
            [
                q(f"sum by (feature) (adoptstream_exposed_users{{{fc}}})", "{{feature}} exposed"),
                q(f"sum by (feature) (adoptstream_adopted_users{{{fc}}})", "{{feature}} adopted"),
            ],
            styles=[line_style(".* exposed$", DASHED)],
        ),
        12,
        8,
    )

    b.row("Time to first use")
    # Sums the selected features' distributions; `*` (any feature) only when it is the sole selection,
    # so "All" does not count every adopted user twice (once for the feature, once for `*`).
    bucket = "adoptstream_time_to_first_use_seconds_bucket"
    b.add(
        heatmap_panel(
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
    b.add(
        timeseries_panel(
            "Time to first use p50 / p90 per feature",
            "histogram_quantile over sum by (feature, le) of the time-to-first-use buckets (interpolated "
            "within buckets 60 s, 5 min, 15 min, 1 h, 4 h, 1 d, 3 d, 7 d, 30 d).",
            [
                q(f"histogram_quantile(0.5, sum by (feature, le) ({bucket}{{{f}}}))", "{{feature}} p50"),
                q(f"histogram_quantile(0.9, sum by (feature, le) ({bucket}{{{f}}}))", "{{feature}} p90"),
            ],
            unit="s",
            styles=[line_style(".* p90$", DASHED)],
        ),
        12,
        10,
    )

    b.row("Top features")
    nf = 'feature=~"$feature", feature!="*"'
    active = 'sum by (feature) (adoptstream_active_users{%s, window="%s"})'
    b.add(
        table_panel(
            "Top features",
            "One row per feature (without `*`), by MAU: active users per window, stickiness, adoption, "
            "median time to first use and the accepted uses over the dashboard's time range.",
            [
                q(active % (nf, "30d"), instant=True, fmt="table"),
                q(active % (nf, "7d"), instant=True, fmt="table"),
                q(active % (nf, "1d"), instant=True, fmt="table"),
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
            ],
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
            order=["feature", *(f"Value #{c}" for c in "ABCDEFG")],
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

    return b.build(
        [
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
        ],
        time_from="now-7d",
    )


def rollouts() -> dm.Dashboard:
    sel = 'rollout=~"$rollout", wave=~"$wave", owner=~"$owner"'
    by = "max by (rollout, feature, wave, owner)"
    switch_sel = 'rollout=~"$rollout", owner=~"$owner"'
    switch_by = "max by (rollout, feature, old_feature, owner)"
    alerts = 'ALERTS{alertname=~"Adoption.*", alertstate="firing"}'
    b = Board(
        UID_ROLLOUTS,
        "adoptstream / Rollouts",
        "Staged rollouts: per wave, adoption vs the schedule's expectation and the target; switch-over of "
        "parallel rollouts; the adoption alerts that fire on them.",
    )

    def wave(series: str, legend: str = "__auto", **kwargs: Any) -> Target:
        return q(f"{by} (adoptstream:rollout_wave_{series}{{{sel}}})", legend, **kwargs)

    def switch(series: str, legend: str = "__auto", **kwargs: Any) -> Target:
        return q(f"{switch_by} (adoptstream:rollout_switchover{series}{{{switch_sel}}})", legend, **kwargs)

    b.row("Now")
    b.add(
        stat_panel(
            "Adoption alerts firing",
            "Alerts from the adoption rules (alertname Adoption*) firing now.",
            [q(f"count({alerts}) or vector(0)", "firing")],
            steps=[(None, "green"), (1, "red")],
            color_mode="background",
            graph=False,
        ),
        4,
        8,
    )
    b.add(
        table_panel(
            "Firing adoption alerts",
            'ALERTS{alertname=~"Adoption.*"} firing now, with the rollout, wave and owner they are about.',
            [q(alerts, instant=True, fmt="table")],
            merge=False,
            hide=["Value", "alertstate"],
            order=["alertname", "severity", "rollout", "feature", "wave", "owner"],
            may_be_empty="No adoption alert is firing",
        ),
        20,
        8,
    )
    b.add(
        table_panel(
            "Rollout waves now",
            "One row per rollout wave: adoption among the wave's exposed users, the adoption its schedule "
            "expects by now, the final target, the difference to expected (negative: behind schedule), "
            "the exposed users, the time since the wave started and until its deadline (negative: past it).",
            [
                wave("adoption:ratio", instant=True, fmt="table"),
                wave("expected:ratio", instant=True, fmt="table"),
                wave("target:ratio", instant=True, fmt="table"),
                q(
                    f"{by} (adoptstream:rollout_wave_adoption:ratio{{{sel}}})"
                    f" - {by} (adoptstream:rollout_wave_expected:ratio{{{sel}}})",
                    instant=True,
                    fmt="table",
                ),
                wave("exposed:users", instant=True, fmt="table"),
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
            ],
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
            order=["rollout", "feature", "wave", "owner", *(f"Value #{c}" for c in "ABCDEFG")],
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
            colored={"vs expected": [(None, "red"), (0, "green")]},
        ),
        24,
        9,
    )

    b.row("Adoption vs expected vs target, per rollout")
    # Repeated per selected rollout, two to a line: Grafana gives each copy 24 / maxPerRow columns.
    b.add(
        timeseries_panel(
            "$rollout: adoption (solid) vs expected (dashed) vs target (dotted)",
            "One panel per selected rollout. Staged rollouts, per wave: adoption among the wave's exposed "
            "users (adoptstream:rollout_wave_adoption:ratio), the adoption the plan expects by now "
            "(…_expected:ratio) and the wave's target (…_target:ratio). Parallel rollouts: the new feature's "
            "share of the users of old or new (adoptstream:rollout_switchover:ratio) with its expected and "
            "target share.",
            [
                wave("adoption:ratio", "{{wave}} adoption"),
                wave("expected:ratio", "{{wave}} expected"),
                wave("target:ratio", "{{wave}} target"),
                switch(":ratio", "switch-over"),
                switch("_expected:ratio", "switch-over expected"),
                switch("_target:ratio", "switch-over target"),
            ],
            unit="percentunit",
            maximum=1,
            styles=[line_style(".* expected$", DASHED), line_style(".* target$", DOTTED)],
        )
        .repeat("rollout")
        .repeat_direction("h")
        .max_per_row(2),
        24,
        9,
    )
    b.add(
        timeseries_panel(
            "Exposed users per wave",
            "Users exposed to the rollout's feature in each wave (adoptstream:rollout_wave_exposed:users).",
            [wave("exposed:users", "{{rollout}} {{wave}}")],
        ),
        12,
        8,
    )
    b.add(
        timeline_panel(
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
            mapping={"1": ("firing", "red"), "0.5": ("pending", "orange")},
            steps=[(None, "orange"), (1, "red")],
            may_be_empty="No adoption alert was pending or firing in this time range",
        ),
        12,
        8,
    )

    b.row("Parallel rollouts: switch-over from the old feature")
    switch_legend = "{{rollout}}: {{old_feature}} → {{feature}}"
    b.add(
        timeseries_panel(
            "Switch-over share over time",
            "For rollouts that replace an old feature with a new one run in parallel: the new feature's "
            "share of the active users of old or new (adoptstream:rollout_switchover:ratio; 100 %: "
            "everybody has switched), and the share the plan expects by now (dashed).",
            [switch(":ratio", switch_legend), switch("_expected:ratio", switch_legend + " expected")],
            unit="percentunit",
            maximum=1,
            styles=[line_style(".* expected$", DASHED)],
        ),
        16,
        8,
    )
    b.add(
        table_panel(
            "Switch-over now",
            "Per parallel rollout: the current switch-over share, the share expected by now, the target and "
            "how long until the plan's deadline (negative: past it).",
            [
                switch(":ratio", instant=True, fmt="table"),
                switch("_expected:ratio", instant=True, fmt="table"),
                switch("_target:ratio", instant=True, fmt="table"),
                q(
                    f"{switch_by} (adoptstream:rollout_switchover_deadline:timestamp_seconds{{{switch_sel}}})"
                    " - time()",
                    instant=True,
                    fmt="table",
                ),
            ],
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
            order=["rollout", "old_feature", "feature", "owner", *(f"Value #{c}" for c in "ABCD")],
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
    return b.build(
        [
            datasource_var(),
            query_var(
                "owner", "Owner", f'label_values({{__name__=~"{wave_metric}|{switch_metric}"}}, owner)'
            ),
            query_var(
                "rollout",
                "Rollout",
                f'label_values({{__name__=~"{wave_metric}|{switch_metric}", owner=~"$owner"}}, rollout)',
                description="Staged rollouts (waves) and parallel rollouts (switch-over from an old "
                "feature).",
            ),
            query_var(
                "wave", "Wave", f'label_values({wave_metric}{{rollout=~"$rollout", owner=~"$owner"}}, wave)'
            ),
        ],
        time_from="now-14d",
    )


def operations() -> dm.Dashboard:
    sel = 'job=~"$job", instance=~"$instance"'
    b = Board(
        UID_OPERATIONS,
        "adoptstream / Operations",
        "For SREs: are the workers up, keeping up and healthy? Events by outcome, dead letters, consumer "
        "lag, processing rate, batch duration, freshness, rebalances, partition assignment, label overflow.",
    )

    b.row("Health")
    b.add(
        stat_panel(
            "Workers up",
            "Workers whose /metrics the last scrape reached (up), those of them serving exact numbers "
            "(ready: not restoring state, adoptstream_ready), out of all scraped.",
            [
                q('sum(up{job=~"$job"})', "up"),
                q('sum(adoptstream_ready{job=~"$job"})', "ready"),
                q('count(up{job=~"$job"})', "scraped"),
            ],
            steps=[(None, "red"), (1, "green")],
            graph=False,
            text_mode="value_and_name",
        ),
        4,
        6,
    )
    b.add(
        stat_panel(
            "Event-time freshness",
            "Now minus the newest event time any worker has seen (time() - "
            "adoptstream_last_event_timestamp_seconds): how far behind real time the newest data is. "
            "Grows when apps stop publishing or the workers stop consuming.",
            [q(f"time() - max(adoptstream_last_event_timestamp_seconds{{{sel}}})", "freshness")],
            unit="s",
            steps=[(None, "green"), (300, "orange"), (900, "red")],
        ),
        4,
        6,
    )
    b.add(
        stat_panel(
            "Consumer lag",
            "Records not yet consumed, over all partitions and topics.",
            [q(f"sum(adoptstream_consumer_lag_records{{{sel}}})", "lag")],
            steps=[(None, "green"), (10000, "orange"), (100000, "red")],
        ),
        4,
        6,
    )
    b.add(
        stat_panel(
            "Dead letters / s",
            "Messages sent to the dead-letter topic (invalid or future), all reasons.",
            [q(f"sum(rate(adoptstream_dead_letters_total{{{sel}}}[$__rate_interval])) or vector(0)", "dlq")],
            unit="suffix: msg/s",
            steps=[(None, "green"), (0.1, "orange"), (1, "red")],
            decimals=2,
        ),
        4,
        6,
    )
    b.add(
        stat_panel(
            "Label overflow",
            "Feature or cohort values folded into the overflow value because the label cap was reached "
            "(adoptstream_label_overflow_values). Non-zero: raise ADOPTSTREAM_MAX_FEATURES / _MAX_COHORTS or "
            "find the app sending unbounded values.",
            [q(f"max by (label) (adoptstream_label_overflow_values{{{sel}}})", "{{label}}")],
            steps=[(None, "green"), (1, "red")],
            graph=False,
        ),
        4,
        6,
    )
    b.add(
        table_panel(
            "Versions",
            "Workers per adoptstream version (adoptstream_build_info).",
            [q(f"count by (version) (adoptstream_build_info{{{sel}}})", instant=True, fmt="table")],
            merge=False,
            rename={"version": "Version", "Value": "Workers"},
        ),
        4,
        6,
    )
    b.add(
        timeline_panel(
            "Workers up and ready over time",
            'Per worker: up (up{job="adoptstream"}: Prometheus could scrape it) and ready '
            "(adoptstream_ready: it serves exact numbers; 0 while it restores its state).",
            [
                q(f"max by (instance) (up{{{sel}}})", "{{instance}} up"),
                q(f"max by (instance) (adoptstream_ready{{{sel}}})", "{{instance}} ready"),
            ],
            mapping={"0": ("no", "red"), "1": ("yes", "green")},
            steps=[(None, "red"), (1, "green")],
        ),
        12,
        6,
    )
    b.add(
        timeseries_panel(
            "Freshness per worker",
            "Event time: now minus the newest event time the worker has accepted. Processing: now minus the "
            "wall-clock time the worker last processed a record (idle topics make both grow).",
            [
                q(
                    f"time() - max by (instance) (adoptstream_last_event_timestamp_seconds{{{sel}}})",
                    "{{instance}} event time",
                ),
                q(
                    f"time() - max by (instance) (adoptstream_last_processed_timestamp_seconds{{{sel}}})",
                    "{{instance}} processing",
                ),
            ],
            unit="s",
            styles=[line_style(".* processing$", DASHED)],
        ),
        12,
        6,
    )

    b.row("Operational alerts")
    ops_alerts = 'ALERTS{alertname=~"Adoptstream.*", alertstate="firing"}'
    b.add(
        stat_panel(
            "Operational alerts firing",
            "Alerts of the operational rules (alertname Adoptstream*: worker down, stalled, lag, dead "
            "letters, label overflow) firing now. Most of them hold back (inhibit) the adoption alerts "
            "while they fire.",
            [q(f"count({ops_alerts}) or vector(0)", "firing")],
            steps=[(None, "green"), (1, "red")],
            color_mode="background",
            graph=False,
        ),
        4,
        6,
    )
    b.add(
        table_panel(
            "Firing operational alerts",
            'ALERTS{alertname=~"Adoptstream.*"} firing now.',
            [q(ops_alerts, instant=True, fmt="table")],
            merge=False,
            hide=["Value", "alertstate"],
            order=["alertname", "severity", "instance", "topic", "reason", "label"],
            may_be_empty="No operational alert is firing",
        ),
        20,
        6,
    )

    b.row("Throughput")
    rate_by = "sum by ({by}) (rate({metric}{{" + sel + "}}[$__rate_interval]))"
    b.add(
        timeseries_panel(
            "Events by outcome",
            "Messages per second by outcome: accepted, duplicate, invalid, future "
            "(adoptstream_events_total).",
            [q(rate_by.format(by="outcome", metric="adoptstream_events_total"), "{{outcome}}")],
            unit="suffix: msg/s",
            stack=True,
        ),
        12,
        8,
    )
    b.add(
        timeseries_panel(
            "Dead letters by reason",
            "Messages per second sent to <topic>.dlq, by reason (adoptstream_dead_letters_total).",
            [q(rate_by.format(by="reason", metric="adoptstream_dead_letters_total"), "{{reason}}")],
            unit="suffix: msg/s",
            stack=True,
        ),
        12,
        8,
    )
    b.add(
        timeseries_panel(
            "Processing rate per stage",
            "Records per second through each stage (ingest: validation and dead-lettering; state: the "
            "per-user state update), per worker.",
            [
                q(
                    rate_by.format(by="instance, stage", metric="adoptstream_processed_records_total"),
                    "{{instance}} {{stage}}",
                )
            ],
            unit="suffix: rec/s",
        ),
        12,
        8,
    )
    batch = "adoptstream_batch_duration_seconds_bucket"
    b.add(
        timeseries_panel(
            "Batch duration p99 / p50 per stage",
            "histogram_quantile over the rate of adoptstream_batch_duration_seconds, all workers.",
            [
                q(
                    f"histogram_quantile(0.99, sum by (stage, le) (rate({batch}{{{sel}}}"
                    "[$__rate_interval])))",
                    "{{stage}} p99",
                ),
                q(
                    f"histogram_quantile(0.5, sum by (stage, le) (rate({batch}{{{sel}}}[$__rate_interval])))",
                    "{{stage}} p50",
                ),
            ],
            unit="s",
            styles=[line_style(".* p50$", DASHED)],
        ),
        12,
        8,
    )

    b.row("Kafka")
    b.add(
        timeseries_panel(
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
    b.add(
        timeseries_panel(
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
    b.add(
        timeseries_panel(
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
    b.add(
        timeseries_panel(
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

    return b.build(
        [
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
        ],
        time_from="now-6h",
        annotations=[
            PrometheusAnnotationBuilder(
                "Rebalances",
                f"sum by (group) (changes(adoptstream_rebalances_total{{{sel}}}[2m])) > 0",
                step="1m",
                title="Rebalance",
                text="{{group}}",
                tag_keys="group",
            )
            .enable(True)
            .hide(False)
            .icon_color("orange")
        ],
        refresh="30s",
    )


# --------------------------------------------------------------------------------------------- engagement
FEEDBACK = "adoptstream_feedback_users"
NPS_SCORES = {"promoters": "9|10", "detractors": "[0-6]"}


def _per_feature(metric: str, matchers: str) -> str:
    return f"sum by (feature) ({metric}{{{matchers}}})"


def nps(matchers: str) -> str:
    """NPS per feature (CONTRACT 3.3): (answers 9-10 - answers 0-6) / all answers x 100."""
    m = f'scale="nps", {matchers}'
    promoters = _per_feature(FEEDBACK, f'{m}, score=~"{NPS_SCORES["promoters"]}"')
    detractors = _per_feature(FEEDBACK, f'{m}, score=~"{NPS_SCORES["detractors"]}"')
    return f"100 * ({promoters} - {detractors}) / ({_per_feature(FEEDBACK, m)} > 0)"


def csat(matchers: str) -> str:
    """CSAT share per feature: answers 4-5 of all answers on the 1-5 scale."""
    m = f'scale="csat", {matchers}'
    satisfied = _per_feature(FEEDBACK, m + ', score=~"4|5"')
    return f"{satisfied} / ({_per_feature(FEEDBACK, m)} > 0)"


def mean_ces(matchers: str) -> str:
    """Mean CES per feature: the score is a label, so the sum of score x users is written out (1..7)."""
    m = f'scale="ces", {matchers}'
    weighted = " + ".join(f"{s} * " + _per_feature(FEEDBACK, f'{m}, score="{s}"') for s in range(1, 8))
    return f"({weighted}) / ({_per_feature(FEEDBACK, m)} > 0)"


def at_least(k: int, n: int) -> str:
    """A `days` matcher for k..n active days (the label is a number: spelled out, no comparison)."""
    return "|".join(str(d) for d in range(k, n + 1))


def engagement() -> dm.Dashboard:
    f = 'feature="$feature"'
    lp = 'period="$period"'
    lifecycle = "adoptstream_lifecycle_users"
    days = "adoptstream_active_days_users"
    task = "adoptstream_task_duration_seconds_bucket"
    fb30 = 'feature!="*", period="30d"'
    b = Board(
        UID_ENGAGEMENT,
        "adoptstream / Engagement",
        "Engagement depth and satisfaction (contract v2): who is new, returning, resurrecting or dormant; "
        "how many days users come back; NPS, CSAT and CES per feature; how long tasks take. Calendar "
        "periods end with today (UTC); exact values summed over workers.",
    )

    b.row("Lifecycle: $feature, period $period")
    active_states = 'state=~"new|returning|resurrecting"'
    b.add(
        timeseries_panel(
            "Lifecycle of $feature users ($period)",
            "Users of the feature by where they are in their life with it, per calendar period of $period "
            "ending today: new (first use ever in this period), returning (also used it in the previous "
            "period), resurrecting (back after a gap of at least a period) above the axis; dormant (used it "
            "in the previous period, not in this one) below it (adoptstream_lifecycle_users).",
            [
                q(f"sum by (state) ({lifecycle}{{{f}, {lp}, {active_states}}})", "{{state}}"),
                q(f'-sum by (state) ({lifecycle}{{{f}, {lp}, state="dormant"}})', "{{state}}"),
            ],
            stack=True,
            bars=True,
            minimum=None,
            decimals=0,
        ),
        16,
        9,
    )
    b.add(
        stat_panel(
            "First-time users ($period)",
            "Share of the period's active users of the feature (new + returning + resurrecting) who used "
            "it for the first time ever (new).",
            [
                q(
                    f'sum({lifecycle}{{{f}, {lp}, state="new"}})'
                    f" / (sum({lifecycle}{{{f}, {lp}, {active_states}}}) > 0)",
                    "first-time",
                )
            ],
            unit="percentunit",
            decimals=1,
        ),
        4,
        9,
    )
    b.add(
        stat_panel(
            "Monthly adoption rate",
            'New users of any feature over the last 30 days (lifecycle new, feature="*") per user who '
            "signed up in those 30 days (adoptstream_signed_up_users): above 100 % when older sign-ups "
            "start using the product.",
            [
                q(
                    f'sum({lifecycle}{{feature="*", period="30d", state="new"}})'
                    ' / (sum(adoptstream_signed_up_users{period="30d"}) > 0)',
                    "adoption rate",
                ),
                q('sum(adoptstream_signed_up_users{period="30d"})', "signed up (30d)"),
            ],
            unit="percentunit",
            decimals=1,
            graph=False,
            text_mode="value_and_name",
        ),
        4,
        9,
    )
    b.add(
        table_panel(
            "Lifecycle per feature ($period)",
            "Users per lifecycle state and feature for the selected period, most active first.",
            [
                q(
                    f'sum by (feature) ({lifecycle}{{{lp}, state="{state}"}})',
                    instant=True,
                    fmt="table",
                )
                for state in ("new", "returning", "resurrecting", "dormant")
            ],
            rename={
                "feature": "Feature",
                "Value #A": "New",
                "Value #B": "Returning",
                "Value #C": "Resurrecting",
                "Value #D": "Dormant",
            },
            order=["feature", "Value #A", "Value #B", "Value #C", "Value #D"],
            sort_by=("Returning", True),
            column_units={name: "short" for name in ("New", "Returning", "Resurrecting", "Dormant")},
        ),
        24,
        8,
    )

    b.row("Stickiness: how many days users come back")
    b.add(
        bargauge_panel(
            "Active days in the last 30 days: $feature",
            "Users of the feature by the number of distinct days (UTC) they used it in the 30-day period "
            "ending today (adoptstream_active_days_users): a long tail to the right is a habit.",
            [
                q(
                    # days 1..9 padded to 01..09, so the rows sort by number
                    f'label_replace(sum by (days) ({days}{{{f}, period="30d"}}),'
                    ' "days", "0$1", "days", "([0-9])")',
                    "{{days}} days",
                    instant=True,
                    fmt="table",
                )
            ],
            unit="short",
            maximum=None,
            decimals=0,
            all_values=True,
            transformations=[
                transformation("sortBy", {"fields": {}, "sort": [{"field": "days", "desc": False}]}),
                transformation(
                    "organize", {"excludeByName": {"Time": True}, "renameByName": {"days": "days"}}
                ),
            ],
        ),
        12,
        12,
    )
    b.add(
        timeseries_panel(
            "Users back on several days: $feature",
            "Of the users active in the period, the share who used the feature on at least k distinct days "
            "(stickiness as a habit): ≥ 3 of the last 7 days, ≥ 10 and ≥ 20 of the last 30.",
            [
                q(
                    f'sum({days}{{{f}, period="{period}", days=~"{at_least(k, n)}"}})'
                    f' / (sum({days}{{{f}, period="{period}"}}) > 0)',
                    f"≥ {k} of {n} days",
                )
                for k, n, period in ((3, 7, "7d"), (10, 30, "30d"), (20, 30, "30d"))
            ],
            unit="percentunit",
            maximum=1,
        ),
        12,
        12,
    )

    b.row("Satisfaction (answers of the last 30 days)")
    b.add(
        bargauge_panel(
            "NPS per feature",
            "Net promoter score of the latest answer of each user in the last 30 days: % answering 9-10 "
            "minus % answering 0-6 (adoptstream_feedback_users, scale nps); -100 to 100.",
            [q(f"sort_desc({nps(fb30)})", "{{feature}}", instant=True)],
            unit="none",
            minimum=-100,
            maximum=100,
            decimals=0,
            steps=[(None, "red"), (0, "orange"), (30, "green")],
        ),
        8,
        10,
    )
    b.add(
        bargauge_panel(
            "CSAT per feature",
            "Share of users whose latest answer in the last 30 days was satisfied (4 or 5 of 5).",
            [q(f"sort_desc({csat(fb30)})", "{{feature}}", instant=True)],
            steps=[(None, "red"), (0.6, "orange"), (0.8, "green")],
        ),
        8,
        10,
    )
    b.add(
        bargauge_panel(
            "Mean CES per feature",
            "Mean customer effort score of the latest answers in the last 30 days (1-7; 7: very easy).",
            [q(f"sort_desc({mean_ces(fb30)})", "{{feature}}", instant=True)],
            unit="none",
            minimum=1,
            maximum=7,
            decimals=1,
            steps=[(None, "red"), (4, "orange"), (5.5, "green")],
        ),
        8,
        10,
    )
    b.add(
        timeseries_panel(
            "Satisfaction of $feature over time",
            'NPS (left, -100..100) of the selected feature ("*": answers about anything, the product as '
            "a whole included) over the last 30 and 90 days.",
            [q(nps(f'{f}, period="{period}"'), f"NPS {period}") for period in ("30d", "90d")],
            unit="none",
            minimum=-100,
            maximum=100,
            styles=[line_style(".*90d$", DASHED)],
        ),
        12,
        8,
    )
    b.add(
        table_panel(
            "Satisfaction per feature",
            "Per feature: NPS, CSAT share and mean CES of the last 30 days, and how many users answered "
            'each scale ("*": about anything, the product as a whole included).',
            [
                q(nps('period="30d"'), instant=True, fmt="table"),
                q(csat('period="30d"'), instant=True, fmt="table"),
                q(mean_ces('period="30d"'), instant=True, fmt="table"),
                q(f'sum by (feature) ({FEEDBACK}{{period="30d"}})', instant=True, fmt="table"),
            ],
            rename={
                "feature": "Feature",
                "Value #A": "NPS",
                "Value #B": "CSAT",
                "Value #C": "CES",
                "Value #D": "Answers",
            },
            order=["feature", "Value #A", "Value #B", "Value #C", "Value #D"],
            sort_by=("Answers", True),
            column_units={"NPS": "none", "CSAT": "percentunit", "CES": "none", "Answers": "short"},
            gauge_columns=["CSAT"],
        ),
        12,
        8,
    )

    b.row("Task time")
    b.add(
        timeseries_panel(
            "Task time p50 / p90 per feature",
            "How long the tasks behind uses take (duration_ms of accepted uses, "
            "adoptstream_task_duration_seconds), over the uses of each interval; interpolated within "
            "buckets 0.5 s, 1 s, 2 s, 5 s, 10 s, 30 s, 1 min, 2 min, 5 min, 15 min, 1 h.",
            [
                q(
                    f"histogram_quantile({quantile}, sum by (feature, le)"
                    f' (rate({task}{{feature!="*"}}[$__rate_interval])))',
                    f"{{{{feature}}}} p{int(quantile * 100)}",
                )
                for quantile in (0.5, 0.9)
            ],
            unit="s",
            styles=[line_style(".* p90$", DASHED)],
        ),
        12,
        10,
    )
    b.add(
        heatmap_panel(
            "Task time: $feature",
            "Uses of the selected feature per task-time bucket and interval (increase of the "
            "adoptstream_task_duration_seconds buckets).",
            [
                q(
                    f"sum by (le) (increase({task}{{{f}}}[$__rate_interval]))",
                    "{{le}}",
                    fmt="heatmap",
                    interval="1m",
                )
            ],
        ),
        12,
        10,
    )

    return b.build(
        [
            datasource_var(),
            query_var(
                "feature",
                "Feature",
                f"label_values({lifecycle}, feature)",
                multi=False,
                include_all=False,
                current="*",
                description='One feature ("*": any feature); lifecycle and active days are per user.',
            ),
            query_var(
                "period",
                "Lifecycle period",
                f"label_values({lifecycle}, period)",
                multi=False,
                include_all=False,
                current="7d",
                description="Calendar period ending today (UTC), compared with the period before it.",
            ),
        ],
        time_from="now-7d",
    )


DASHBOARDS: dict[str, Callable[[], dm.Dashboard]] = {
    "adoption-overview.json": adoption_overview,
    "rollouts.json": rollouts,
    "operations.json": operations,
    "engagement.json": engagement,
}


def render(build: Callable[[], dm.Dashboard]) -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


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
