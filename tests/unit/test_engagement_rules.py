"""The engagement recording rules (static rules, contract v2): each active-days share counts exactly the
users active on at least ``min_days`` dates of its period (deploy/prometheus/tests/engagement.test.yml
checks the values with promtool)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from adoptstream.rollout.static_rules import render_static_rules_text

PERIOD_DAYS = {"7d": 7, "30d": 30}


def engagement_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(render_static_rules_text())["groups"]
    return next(g for g in groups if g["name"] == "adoptstream.engagement")["rules"]


def test_active_days_shares_count_exactly_the_users_on_at_least_min_days_dates() -> None:
    shares = [r for r in engagement_rules() if r.get("record") == "adoptstream:active_days_at_least:ratio"]
    assert {(r["labels"]["period"], r["labels"]["min_days"]) for r in shares} == {
        ("7d", "2"),
        ("7d", "4"),
        ("30d", "4"),
        ("30d", "8"),
        ("30d", "15"),
    }
    for rule in shares:
        period, k = rule["labels"]["period"], int(rule["labels"]["min_days"])
        matchers = re.findall(r'period="(\w+)",days=~"([^"]+)"', rule["expr"])
        assert [m[0] for m in matchers] == [period], rule["expr"]
        days = PERIOD_DAYS[period]
        counted = {d for d in range(1, days + 1) if re.fullmatch(matchers[0][1], str(d))}  # RE2 anchors too
        assert counted == set(range(k, days + 1)), (period, k, sorted(counted))
        # the denominator: every active user of the period, whatever their days
        everyone = f'(sum by (feature, period) (adoptstream:active_days_users:sum{{period="{period}"}}) > 0)'
        assert everyone in rule["expr"]


def test_every_kpi_is_derived_from_the_sums_over_workers() -> None:
    rules = engagement_rules()
    raw = re.compile(r"\badoptstream_(active_days|lifecycle|signed_up|feedback)_users\b")
    for rule in rules:
        if rule["record"].endswith(":sum"):
            assert rule["expr"].startswith("sum by ("), rule
        else:
            assert not raw.search(rule["expr"]), f"{rule['record']} reads a worker series directly"
