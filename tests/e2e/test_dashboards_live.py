"""Every query of every provisioned dashboard, run against a live worker through Prometheus' HTTP API.

The live stack (tests/e2e/live.py): the real broker, a worker fed by the generator and the stall
scenario with three rollout plans' rules loaded, Prometheus with the project's rules scraping it. For
each dashboard, as Grafana would:

1. the variables are resolved in order, each `label_values(selector, label)` from Prometheus' series
   API with the earlier variables at their defaults; each must return values, a concrete default among
   them;
2. every panel target, annotation and variable selector runs with the defaults (All, or the default
   value): range queries over the stack's life as Grafana's panels do, instant ones at now. Each must
   return data, unless its panel says it may be empty (its no-value text): then Prometheus must hold no
   alert its selector matches, while rules for such alerts are loaded and healthy;
3. every query that uses a variable runs again with each value that variable's query returned (the
   others at their defaults): each must be valid, and at least one value must give data, so a label a
   series does not carry cannot hide behind "All";
4. every metric name in every expression must be a series Prometheus has (`/api/v1/label/__name__/
   values`) or a recording rule it runs; `ALERTS` is Prometheus' own, for the alerting rules loaded.

The Engagement board reads the v2 series (CONTRACT section 3): it is checked the same way as soon as the
worker exports them, and skipped, saying why, until then.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from adoptstream_dev.dashboard_queries import (
    VARIABLE_RE,
    Query,
    Variable,
    interpolate,
    load_dashboards,
    metric_names,
    queries,
    variables,
)
from tests.e2e.conftest import needs_monitoring
from tests.e2e.live import LiveStack

pytestmark = [pytest.mark.e2e, pytest.mark.integration, needs_monitoring, pytest.mark.timeout(400)]

DASHBOARDS = load_dashboards()
V2_PROBE = "adoptstream_lifecycle_users"  # the Engagement board needs the v2 worker (CONTRACT section 3)
SCRAPE_S = 1


@dataclass
class Window:
    """The time range the dashboard is looked at: the stack's life so far, as a Grafana time picker."""

    start: float
    end: float

    @property
    def step(self) -> int:
        return max(1, int((self.end - self.start) / 60))  # about 60 points, as a small panel gets

    def builtins(self) -> dict[str, str]:
        """Grafana's built-in variables for this range ($__rate_interval as Grafana computes it)."""
        rng = int(self.end - self.start)
        rate = max(4 * SCRAPE_S, self.step + SCRAPE_S)
        return {
            "__interval": f"{self.step}s",
            "__interval_ms": str(self.step * 1000),
            "__rate_interval": f"{rate}s",
            "__range": f"{rng}s",
            "__range_s": str(rng),
            "__range_ms": str(rng * 1000),
        }


def run(stack: LiveStack, query: Query, expr: str, window: Window) -> list[dict[str, Any]]:
    """What Grafana would get: an instant query at the end, or a range query over the window."""
    if query.instant:
        return list(stack.api("query", query=expr, time=window.end)["result"])
    data = stack.api("query_range", query=expr, start=window.start, end=window.end, step=window.step)
    return list(data["result"])


def label_values(stack: LiveStack, var: Variable, selector: str, window: Window) -> list[str]:
    """`label_values(selector, label)` as Grafana asks Prometheus: the series API over the range."""
    series = stack.api("series", **{"match[]": selector, "start": window.start, "end": window.end})
    return sorted({s[var.label] for s in series if var.label in s})


Selection = dict[str, list[str]]


def resolve(stack: LiveStack, board: str, window: Window) -> tuple[Selection, Selection]:
    """Each variable's values (from Prometheus) and default selection, resolving them in order."""
    defined = variables(DASHBOARDS[board])
    defaults: dict[str, list[str]] = {}
    values: dict[str, list[str]] = {}
    for var in defined:
        selector = interpolate(var.selector, defaults, defined, window.builtins())
        found = label_values(stack, var, selector, window)
        assert found, f"{board}: variable ${var.name} ({var.selector}) returns no value"
        if var.current != ["$__all"]:
            assert set(var.current) <= set(found), f"{board}: ${var.name}={var.current} not in {found}"
        values[var.name], defaults[var.name] = found, var.current
    return values, defaults


def used_variables(expr: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in VARIABLE_RE.finditer(expr)}


def alert_matchers(expr: str) -> list[tuple[str, str, str]]:
    """(label, op, value) of the ALERTS selectors in ``expr``."""
    return [
        (label, op, value)
        for selector in re.findall(r"ALERTS\{([^}]*)\}", expr)
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector)
    ]


def matches(labels: Mapping[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, op, value in matchers:
        have = labels.get(label, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


def check_empty_for_the_right_reason(stack: LiveStack, query: Query, expr: str) -> None:
    """An empty alert panel: no alert Prometheus holds matches it, and rules that could fire it run."""
    matchers = [m for m in alert_matchers(expr) if m[0] != "alertstate"]
    states = {v for label, _, v in alert_matchers(expr) if label == "alertstate"}
    assert matchers, f"{query}: may be empty, but selects no alert: {expr}"
    held = [
        a
        for a in stack.api("alerts")["alerts"]
        if a["state"] in (states or {"pending", "firing"}) and matches(a["labels"], matchers)
    ]
    assert not held, f"{query} is empty, yet Prometheus holds {held}"
    rules = [
        r
        for g in stack.api("rules", type="alert")["groups"]
        for r in g["rules"]
        if matches({"alertname": r["name"]}, [m for m in matchers if m[0] == "alertname"])
    ]
    assert rules, f"{query}: no alerting rule its selector could match is loaded"
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]


@pytest.fixture(scope="module")
def known_metrics(live_stack: LiveStack) -> set[str]:
    names = set(live_stack.api("label/__name__/values"))
    recorded = {r["name"] for g in live_stack.api("rules", type="record")["groups"] for r in g["rules"]}
    return names | recorded | {"ALERTS"}  # ALERTS: Prometheus' own series of the alerting rules


@pytest.mark.parametrize("board", sorted(DASHBOARDS))
def test_every_dashboard_query_returns_live_data(
    live_stack: LiveStack, known_metrics: set[str], board: str
) -> None:
    if board == "engagement.json" and V2_PROBE not in known_metrics:
        pytest.skip(
            f"the worker does not export {V2_PROBE} yet (contract v2, CONTRACT section 3): the Engagement "
            "board is checked here once the v2 metrics are merged"
        )
    live_stack.check()
    began = time.monotonic()
    window = Window(live_stack.started_at, time.time())
    builtins = window.builtins()
    dash = DASHBOARDS[board]
    defined = variables(dash)
    values, defaults = resolve(live_stack, board, window)
    all_queries = queries(board, dash)

    # 4. names: every metric each expression selects is exported or recorded
    for query in all_queries:
        unknown = metric_names(interpolate(query.expr, defaults, defined, builtins)) - known_metrics
        assert not unknown, f"{query}: no worker exports and no rule records {sorted(unknown)}: {query.expr}"

    # 2. defaults: data everywhere, or empty for the reason the panel gives
    def with_defaults(query: Query) -> tuple[Query, str, list[dict[str, Any]]]:
        expr = interpolate(query.expr, defaults, defined, builtins)
        return query, expr, run(live_stack, query, expr, window)

    # 3. every value of every variable a query uses
    def per_value(query: Query, name: str) -> tuple[Query, str, list[str]]:
        answered = []
        for value in values[name]:
            expr = interpolate(query.expr, {**defaults, name: [value]}, defined, builtins)
            if run(live_stack, query, expr, window):
                answered.append(value)
        return query, name, answered

    concrete = [
        (query, name)
        for query in all_queries
        for name in sorted(used_variables(query.expr) & set(values))
        if not query.may_be_empty
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = list(pool.map(with_defaults, all_queries))
        second = list(pool.map(lambda item: per_value(*item), concrete))

    empty = []
    for query, expr, result in first:
        if result:
            continue
        if query.may_be_empty:
            check_empty_for_the_right_reason(live_stack, query, expr)
        else:
            empty.append(f"{query}: {expr}")
    assert not empty, "no data for:\n" + "\n".join(empty)
    never = [f"{query} with any ${name} of {values[name]}" for query, name, found in second if not found]
    assert not never, "no data for any value of the variable:\n" + "\n".join(never)
    runs = len(first) + sum(len(values[name]) for _, name in concrete)
    print(
        f"{board}: {len(all_queries)} queries, {runs} runs over {window.end - window.start:.0f} s of data, "
        f"{sum(1 for q, _, r in first if not r)} empty as their panel allows, "
        f"{time.monotonic() - began:.1f} s"
    )
