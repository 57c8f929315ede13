"""What the provisioned Grafana dashboards send to Prometheus, with Grafana's variable interpolation.

Shared by the dashboard unit tests (names, syntax) and the live test (every query against a real
Prometheus): panel targets, annotation queries and the selectors of `label_values()` variables, each with
whether Grafana runs it as an instant or a range query and whether the dashboard says it may be empty
(a panel's "no value" text, `may_be_empty` in grafana/build_dashboards.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adoptstream_dev.paths import REPO_ROOT

DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"

# $var, ${var}, ${var:format}, [[var]]; not $1 (a regex group in label_replace: no variable is named so)
VARIABLE_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)\]\]")
LABEL_VALUES_RE = re.compile(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", re.S)
_NAME_ALTERNATION = re.compile(r"[A-Za-z_:][\w:]*(\|[A-Za-z_:][\w:]*)*")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")


@dataclass(frozen=True)
class Query:
    """One PromQL expression a dashboard runs."""

    board: str  # dashboard file name
    where: str  # "panel 'Title' target B", "annotation 'Rebalances'", "variable $feature"
    expr: str  # with Grafana's variables in it
    instant: bool  # Grafana runs it at one time (tables, bar gauges) rather than over the range
    may_be_empty: str | None = None  # the panel's own words for an empty result

    def __str__(self) -> str:
        return f"{self.board}: {self.where}"


@dataclass(frozen=True)
class Variable:
    """A `label_values(selector, label)` query variable."""

    name: str
    selector: str
    label: str
    multi: bool
    include_all: bool
    all_value: str | None
    current: list[str]  # the default selection; ["$__all"] for All


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file of ``directory`` by file name."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))}


def iter_panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def variables(dash: dict[str, Any]) -> list[Variable]:
    """The dashboard's query variables in their order (later ones may use earlier ones)."""
    out = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query", "")
        query = query.get("query", "") if isinstance(query, dict) else str(query)
        match = LABEL_VALUES_RE.fullmatch(query)
        if match is None:
            raise ValueError(
                f"variable ${var['name']}: only label_values(selector, label) is supported: {query}"
            )
        current = var.get("current", {}).get("value", [])
        out.append(
            Variable(
                name=var["name"],
                selector=match.group(1),
                label=match.group(2),
                multi=bool(var.get("multi")),
                include_all=bool(var.get("includeAll")),
                all_value=var.get("allValue"),
                current=current if isinstance(current, list) else [current],
            )
        )
    return out


def queries(board: str, dash: dict[str, Any]) -> list[Query]:
    """Everything the dashboard sends to Prometheus: targets, annotations, variable selectors."""
    found: list[Query] = []
    for panel in iter_panels(dash["panels"]):
        empty = panel.get("fieldConfig", {}).get("defaults", {}).get("noValue")
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"panel {panel['title']!r} target {target.get('refId')}"
                found.append(Query(board, where, target["expr"], bool(target.get("instant")), empty))
    for annotation in dash.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append(Query(board, f"annotation {annotation['name']!r}", annotation["expr"], False))
    for var in variables(dash):
        found.append(Query(board, f"variable ${var.name}", var.selector, False))
    return found


def regex_escape(value: str) -> str:
    """Grafana's escaping of a multi-value variable's value inside a PromQL regex matcher."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(), value.replace("\\", "\\\\\\\\"))


def interpolate(
    expr: str,
    selection: Mapping[str, Sequence[str]],
    defined: Sequence[Variable],
    builtins: Mapping[str, str],
) -> str:
    """``expr`` with its variables replaced the way Grafana's Prometheus datasource does it.

    ``selection`` maps a variable to its selected values (``["$__all"]``: All). Multi-value and
    "include All" variables become regexes: each value escaped, several joined as ``(a|b)``, All as the
    variable's allValue. A double quote in a value is escaped for the PromQL string too (Grafana 11 does
    so, earlier versions broke the query).
    """
    by_name = {v.name: v for v in defined}

    def one(name: str) -> str:
        if name in builtins:
            return builtins[name]
        var, values = by_name[name], list(selection[name])
        if var.multi or var.include_all:
            if values == ["$__all"]:
                return var.all_value or "(" + "|".join(regex_escape(v) for v in values) + ")"
            escaped = [regex_escape(v).replace('"', '\\"') for v in values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        (value,) = values
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return VARIABLE_RE.sub(lambda m: one(next(g for g in m.groups() if g)), expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (from its syntax tree; raises on invalid PromQL)."""
    import promql_parser

    names: set[str] = set()

    def walk(node: Any) -> None:
        kind = type(node).__name__
        if kind == "VectorSelector":
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name != "__name__":
                    continue
                if matcher.op == promql_parser.MatchOp.Equal:
                    names.add(matcher.value)
                elif matcher.op == promql_parser.MatchOp.Re and _NAME_ALTERNATION.fullmatch(matcher.value):
                    names.update(matcher.value.split("|"))  # {__name__=~"a|b"}: each of them
            return
        for child in ("expr", "lhs", "rhs", "vector_selector", "param"):
            value = getattr(node, child, None)
            if value is not None and not isinstance(value, (str, int, float)):
                walk(value)
        for arg in getattr(node, "args", None) or []:
            walk(arg)

    walk(promql_parser.parse(expr))
    return names
