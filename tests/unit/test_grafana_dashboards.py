"""The provisioned Grafana dashboards: structure, metric names, PromQL validity, provisioning.

Every expression a dashboard runs (panel targets, annotation queries, the selectors inside variable
queries) is checked against the metric names the project exports or records, and, when promtool is on
PATH (`make test` installs it), parsed by Prometheus itself through a throwaway rules file.
tests/e2e/test_dashboards_live.py runs every one of them against a live worker and Prometheus.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from adoptstream_dev.dashboard_queries import VARIABLE_RE, iter_panels, load_dashboards, metric_names, queries

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"

# Alert annotations link to these (dashboard_url): they must never change.
EXPECTED_UIDS = {
    "adoptstream-adoption",
    "adoptstream-rollouts",
    "adoptstream-operations",
    "adoptstream-engagement",
}

CONTRACT_METRICS = {
    "adoptstream_events_total",
    "adoptstream_active_users",
    "adoptstream_exposed_users",
    "adoptstream_adopted_users",
    "adoptstream_feature_uses_total",
    # v2 (CONTRACT section 3)
    "adoptstream_active_days_users",
    "adoptstream_lifecycle_users",
    "adoptstream_signed_up_users",
    "adoptstream_feedback_users",
}
OPERATIONAL_METRICS = {
    "adoptstream_consumer_lag_records",
    "adoptstream_processed_records_total",
    "adoptstream_last_event_timestamp_seconds",
    "adoptstream_last_processed_timestamp_seconds",
    "adoptstream_rebalances_total",
    "adoptstream_dead_letters_total",
    "adoptstream_assigned_partitions",
    "adoptstream_label_overflow_values",
    "adoptstream_build_info",
    "adoptstream_ready",
}
HISTOGRAMS = {
    "adoptstream_time_to_first_use_seconds",
    "adoptstream_batch_duration_seconds",
    "adoptstream_task_duration_seconds",
}
RECORDING_RULES = {
    "adoptstream:stickiness:ratio",
    "adoptstream:adoption:ratio",
    "adoptstream:adoption_feature:ratio",
    "adoptstream:rollout_wave_adoption:ratio",
    "adoptstream:rollout_wave_expected:ratio",
    "adoptstream:rollout_wave_target:ratio",
    "adoptstream:rollout_wave_start:timestamp_seconds",
    "adoptstream:rollout_wave_exposed:users",
    "adoptstream:rollout_switchover:ratio",
}
# Also recorded by the rollout rules: the wave's deadline, the switch-over's plan.
MORE_RECORDING_RULES = {
    "adoptstream:rollout_wave_deadline:timestamp_seconds",
    "adoptstream:rollout_switchover_expected:ratio",
    "adoptstream:rollout_switchover_target:ratio",
    "adoptstream:rollout_switchover_deadline:timestamp_seconds",
}
KNOWN_METRICS = (
    CONTRACT_METRICS
    | OPERATIONAL_METRICS
    | RECORDING_RULES
    | MORE_RECORDING_RULES
    | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
# What the boards must chart: every series above (a histogram through its buckets).
MUST_CHART = CONTRACT_METRICS | OPERATIONAL_METRICS | RECORDING_RULES | {h + "_bucket" for h in HISTOGRAMS}

METRIC_RE = re.compile(r"adoptstream[_:][a-z_:]+")

# Concrete values for Grafana's variables, to hand the expressions to promtool.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "30000",
}
SAMPLE_VALUES = {
    "feature": "checkout",
    "cohort": "unassigned",
    "rollout": "new-checkout",
    "wave": "wave-1",
    "owner": "payments",
    "job": "adoptstream",
    "instance": "127.0.0.1:6066",
    "period": "7d",
}
PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "table", "heatmap", "state-timeline"}
AGGREGATION_RE = re.compile(
    r"\b(sum|max|min|avg|count|group|topk|bottomk|quantile)\s*(?:(?:by|without)\s*\([^()]*\)\s*)?$"
)


DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards(DASHBOARD_DIR)


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for everything the dashboard sends to Prometheus."""
    return [(query.where, query.expr) for query in queries("", dash)]


def all_expressions(dashboards: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (f"{name}: {where}", expr) for name, dash in dashboards.items() for where, expr in expressions(dash)
    ]


def substitute(expr: str) -> str:
    values = {**GRAFANA_BUILTINS, **SAMPLE_VALUES}

    def repl(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return VARIABLE_RE.sub(repl, expr)


# ------------------------------------------------------------------------------------------- structure
def test_dashboards_parse_with_the_expected_unique_uids(dashboards: dict[str, dict[str, Any]]) -> None:
    assert len(DASHBOARD_FILES) == len(EXPECTED_UIDS), [p.name for p in DASHBOARD_FILES]
    uids = [dash.get("uid") for dash in dashboards.values()]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    titles = [dash.get("title") for dash in dashboards.values()]
    assert len(set(titles)) == len(titles), titles


def test_schema_version_datasource_and_no_fixed_ids(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, dash in dashboards.items():
        assert dash["schemaVersion"] >= 39, name
        assert dash.get("id") is None, f"{name}: a provisioned dashboard must not carry a database id"
        variables = {var["name"]: var for var in dash["templating"]["list"]}
        ds = variables.get("datasource")
        assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", name
        assert ds["current"]["value"] == "prometheus", f"{name}: default must be the provisioned uid"
        for panel in iter_panels(dash["panels"]):
            if panel["type"] == "row":
                continue
            for item in [panel, *panel.get("targets", [])]:
                uid = item.get("datasource", {}).get("uid")
                assert uid in ("${datasource}", "prometheus"), f"{name}: {panel['title']!r} uses {uid!r}"
        for var in variables.values():
            if var["type"] == "query":
                assert var["datasource"]["uid"] == "${datasource}", f"{name}: ${var['name']}"


def test_every_panel_has_a_target_expression(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, dash in dashboards.items():
        panels = [p for p in iter_panels(dash["panels"]) if p["type"] != "row"]
        assert len(panels) >= 8, f"{name}: only {len(panels)} panels"
        for panel in panels:
            assert panel["type"] in PANEL_TYPES, f"{name}: {panel['title']!r} has type {panel['type']}"
            assert panel.get("title"), f"{name}: panel {panel.get('id')} has no title"
            targets = panel.get("targets", [])
            assert targets, f"{name}: {panel['title']!r} has no target"
            for target in targets:
                assert target.get("expr", "").strip(), f"{name}: {panel['title']!r} has an empty target"
            ref_ids = [t["refId"] for t in targets]
            assert len(set(ref_ids)) == len(ref_ids), f"{name}: {panel['title']!r} repeats a refId"


def test_panel_ids_unique_and_layout_does_not_overlap(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, dash in dashboards.items():
        ids = [p["id"] for p in iter_panels(dash["panels"])]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        titles = [p["title"] for p in iter_panels(dash["panels"]) if p["type"] != "row"]
        assert len(set(titles)) == len(titles), f"{name}: two panels share a title"
        cells: dict[tuple[int, int], str] = {}
        for panel in dash["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{name}: {panel['title']!r} is off the grid"
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{name}: {panel['title']!r} overlaps {other!r}"


def test_generated_json_matches_its_source() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    assert set(module.DASHBOARDS) == {p.name for p in DASHBOARD_FILES}
    for name, build in module.DASHBOARDS.items():
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == module.render(build), (
            f"grafana/dashboards/{name} differs from grafana/build_dashboards.py: run "
            "`python grafana/build_dashboards.py` and commit both"
        )


# --------------------------------------------------------------------------------------------- metrics
def test_every_metric_name_is_known(dashboards: dict[str, dict[str, Any]]) -> None:
    for where, expr in all_expressions(dashboards):
        unknown = set(METRIC_RE.findall(expr)) - KNOWN_METRICS
        assert not unknown, f"{where}: unknown metric(s) {sorted(unknown)} in {expr}"


def test_every_metric_is_charted(dashboards: dict[str, dict[str, Any]]) -> None:
    used = {m for _, expr in all_expressions(dashboards) for m in METRIC_RE.findall(expr)}
    assert MUST_CHART - used == set()
    exprs = " ".join(expr for _, expr in all_expressions(dashboards))
    assert re.search(r'\bup\{job=~?"\$job"\}', exprs), "workers up (up{job=...}) is not charted"
    assert 'ALERTS{alertname=~"Adoption.*"' in exprs, "firing adoption alerts are not charted"


def enclosing_calls(expr: str, pos: int) -> Iterator[str]:
    """The text before each unmatched '(' enclosing position `pos`, innermost first."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            if depth == 0:
                yield expr[:i]
            else:
                depth -= 1


def test_recording_rules_used_are_recorded(dashboards: dict[str, dict[str, Any]]) -> None:
    """A dashboard series named after a rule nobody records would stay empty: check against the rules."""
    recorded = set()
    for path in sorted(RULES_DIR.glob("*.yml")) + sorted(RULES_DIR.glob("*.yaml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            recorded |= {rule["record"] for rule in group.get("rules", []) if "record" in rule}
    if not recorded:
        pytest.skip("no recording rules under deploy/prometheus/rules yet")
    used = {m for _, expr in all_expressions(dashboards) for m in METRIC_RE.findall(expr) if ":" in m}
    assert used - recorded == set(), "charted but recorded by no rule in deploy/prometheus/rules"


def test_worker_series_are_aggregated_over_workers(dashboards: dict[str, dict[str, Any]]) -> None:
    """Each worker holds a disjoint part of the users: a raw series is one worker's part, never the answer."""
    for where, expr in all_expressions(dashboards):
        if where.endswith(tuple(f"variable ${v}" for v in SAMPLE_VALUES)):
            continue  # label_values() selectors list label values, they are not charted
        for match in re.finditer(r"\badoptstream_[a-z_]+", expr):
            assert any(AGGREGATION_RE.search(prefix) for prefix in enclosing_calls(expr, match.start())), (
                f"{where}: {match.group()} is not inside an aggregation over workers in {expr}"
            )


def test_histogram_quantiles_aggregate_by_le(dashboards: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for where, expr in all_expressions(dashboards):
        for match in re.finditer(r"histogram_quantile\(\s*[\d.]+\s*,\s*sum\s+by\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in match.group(1).split(",")}
            assert "le" in labels, f"{where}: histogram_quantile over sum by ({match.group(1)}) lacks le"
            checked += 1
        assert "histogram_quantile(" not in expr or "sum by" in expr, f"{where}: {expr}"
    assert checked >= 4


def test_heatmap_uses_cumulative_buckets_by_le(dashboards: dict[str, dict[str, Any]]) -> None:
    heatmaps = [p for d in dashboards.values() for p in iter_panels(d["panels"]) if p["type"] == "heatmap"]
    assert heatmaps
    for panel in heatmaps:
        for target in panel["targets"]:
            assert target["format"] == "heatmap" and target["legendFormat"] == "{{le}}", panel["title"]
            assert "_bucket" in target["expr"] and "sum by (le)" in target["expr"], panel["title"]


def test_variables_are_defined_and_nothing_is_hard_coded(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, dash in dashboards.items():
        defined = {var["name"] for var in dash["templating"]["list"]} | set(GRAFANA_BUILTINS)
        for where, expr in expressions(dash):
            for match in VARIABLE_RE.finditer(expr):
                var = next(group for group in match.groups() if group)
                assert var in defined, f"{name}: {where} uses undefined ${var}"
                assert var in SAMPLE_VALUES or var in GRAFANA_BUILTINS, (
                    f"test needs a sample value for ${var}"
                )
            assert not re.search(r'instance\s*=~?\s*"(?!\$)', expr), f"{name}: {where} names an instance"
            assert not re.search(r"\d+\.\d+\.\d+\.\d+:\d+|localhost:\d+", expr), f"{name}: {where}: {expr}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH (make test installs it)")
def test_expressions_are_valid_promql(dashboards: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    exprs = all_expressions(dashboards)
    rules = [{"record": f"grafana:expr_{i}", "expr": substitute(expr)} for i, (_, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}, sort_keys=False))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    index = "\n".join(f"grafana:expr_{i} = {where}: {expr}" for i, (where, expr) in enumerate(exprs))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{index}"
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def test_metric_names_come_from_the_syntax_tree(dashboards: dict[str, dict[str, Any]]) -> None:
    """What the regex above finds is what Prometheus' grammar finds, plus `up` and `ALERTS`."""
    for where, expr in all_expressions(dashboards):
        names = metric_names(substitute(expr))
        assert names, f"{where}: selects no metric: {expr}"
        assert names - {"up", "ALERTS"} == set(METRIC_RE.findall(expr)), f"{where}: {expr}"


def test_only_alert_panels_may_be_empty(dashboards: dict[str, dict[str, Any]]) -> None:
    """The "may be empty" mark (a panel's no-value text) is for alert lists: nothing else hides behind it."""
    marked = [
        query for name, dash in dashboards.items() for query in queries(name, dash) if query.may_be_empty
    ]
    assert {q.board for q in marked} == {"rollouts.json", "operations.json"}
    for query in marked:
        assert metric_names(substitute(query.expr)) == {"ALERTS"}, f"{query}: {query.expr}"
        assert "vector(" not in query.expr, f"{query}: a constant fallback is never empty"


def test_substitution_replaces_every_variable() -> None:
    out = substitute('rate(x{feature=~"$feature", job="${job}"}[$__rate_interval]) [[cohort]]')
    assert out == 'rate(x{feature=~"checkout", job="adoptstream"}[1m]) unassigned'


def test_aggregation_check_catches_a_raw_series() -> None:
    raw = "adoptstream_active_users{window='1d'}"
    assert not any(AGGREGATION_RE.search(p) for p in enclosing_calls(raw, 0))
    wrapped = "rate(adoptstream_events_total[1m])"
    assert not any(AGGREGATION_RE.search(p) for p in enclosing_calls(wrapped, 5))
    good = "sum by (feature) (rate(adoptstream_events_total[1m]))"
    assert any(AGGREGATION_RE.search(p) for p in enclosing_calls(good, good.index("adoptstream")))


# ---------------------------------------------------------------------------------------- provisioning
def compose_mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of the service's bind mounts."""
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = {}
    for volume in compose["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_datasource_provisioning_defines_the_uid_the_dashboards_use() -> None:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    prometheus = [ds for ds in doc["datasources"] if ds["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0]["uid"] == "prometheus"
    assert prometheus[0]["url"].startswith("http")
    assert prometheus[0].get("isDefault") is True


def test_dashboard_provisioning_points_at_the_dashboards_dir() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "adoptstream.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    mounts = compose_mounts("grafana")
    # The container path the provider reads is where docker-compose mounts grafana/dashboards ...
    assert path in mounts, f"{path} is not a mount of the grafana service: {mounts}"
    host_dir = (ROOT / mounts[path]).resolve()
    assert host_dir == DASHBOARD_DIR.resolve()
    # ... and Grafana reads its provisioning from the repository's provisioning dirs.
    for kind in ("datasources", "dashboards"):
        container = f"/etc/grafana/provisioning/{kind}"
        assert container in mounts, f"{container} not mounted"
        assert (ROOT / mounts[container]).resolve() == (PROVISIONING / kind).resolve()
    home = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]["environment"].get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    )
    if home:
        assert home.startswith(path + "/") and (DASHBOARD_DIR / Path(home).name).is_file(), home


def test_alert_dashboard_urls_name_existing_dashboards(dashboards: dict[str, dict[str, Any]]) -> None:
    rule_files = sorted(RULES_DIR.glob("*.yml")) + sorted(RULES_DIR.glob("*.yaml"))
    urls = []
    for path in rule_files:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                url = rule.get("annotations", {}).get("dashboard_url")
                if url:
                    urls.append((path.name, rule.get("alert"), url))
    if not urls:
        pytest.skip("no alert rule with a dashboard_url annotation under deploy/prometheus/rules yet")
    uids = {dash["uid"] for dash in dashboards.values()}
    for file, alert, url in urls:
        match = re.search(r"/d/([A-Za-z0-9_-]+)", url)
        assert match and match.group(1) in uids, f"{file}: alert {alert} links to {url}, not one of {uids}"
