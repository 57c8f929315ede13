"""Alertmanager configuration from rollout plans: one webhook receiver per product owner, the SRE one.

Adoption alerts (``category="adoption"``) go to the receiver of the ``owner`` label the plan put on them,
operational ones to SRE; alerts that make adoption numbers untrustworthy (a worker down, no events,
processing stuck, lag growing) inhibit the adoption alerts, and a stalled wave inhibits its own
behind-plan alert. Group timings shrink for short (demo/test) stall windows so those alert promptly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adoptstream.rollout.durations import format_duration
from adoptstream.rollout.plan import PlanSet
from adoptstream.rollout.rules import dump_yaml

# Placeholders on loopback so a copied config never sends alerts anywhere unexpected.
DEFAULT_OWNER_WEBHOOK_URL = "http://127.0.0.1:5001/adoptstream/owners/{owner}"
DEFAULT_SRE_WEBHOOK_URL = "http://127.0.0.1:5001/adoptstream/sre"
DEFAULT_PRODUCT_WEBHOOK_URL = "http://127.0.0.1:5001/adoptstream/product"

SRE_RECEIVER = "sre"
PRODUCT_RECEIVER = "product-default"

# Alerts that make adoption numbers wrong or late: while one fires, adoption alerts are held back.
ADOPTION_BLOCKERS = (
    "AdoptstreamWorkerDown",
    "AdoptstreamWorkerNotReady",
    "AdoptstreamNoEventsAccepted",
    "AdoptstreamProcessingStalled",
    "AdoptstreamConsumerLagGrowing",
    "AdoptstreamPartitionStuck",
    "AdoptstreamBatchesFailing",
    "AdoptstreamInputRecordsLost",
)


@dataclass(frozen=True)
class ReceiverOptions:
    """Webhook URLs (``{owner}`` in the owner template is replaced) and the template files to load."""

    owner_webhook_url: str = DEFAULT_OWNER_WEBHOOK_URL
    sre_webhook_url: str = DEFAULT_SRE_WEBHOOK_URL
    product_webhook_url: str = DEFAULT_PRODUCT_WEBHOOK_URL
    templates: tuple[str, ...] = ("templates/*.tmpl",)


def owner_receiver(owner: str) -> str:
    """The receiver name of a product owner."""
    return f"owner-{owner}"


def _timings(plans: PlanSet, owner: str | None = None) -> dict[str, str]:
    """group_wait/group_interval: the usual 30s/5m, shorter when a stall window is under 5 minutes."""
    windows = [
        stall.window_s
        for r in plans.rollouts
        if owner is None or r.owner == owner
        for stall in [w.stall for w in r.waves] + ([r.switchover.stall] if r.switchover else [])
    ]
    shortest = min(windows, default=86400)
    return {
        "group_wait": format_duration(max(1, min(30, shortest // 10))),
        "group_interval": format_duration(max(5, min(300, shortest // 4))),
    }


def _webhook(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "webhook_configs": [{"url": url, "send_resolved": True, "max_alerts": 0}]}


def render_alertmanager(plans: PlanSet, options: ReceiverOptions | None = None) -> dict[str, Any]:
    """The Alertmanager configuration (as data) for the owners of ``plans``."""
    options = options or ReceiverOptions()
    owner_routes: list[dict[str, Any]] = []
    receivers = [
        _webhook(SRE_RECEIVER, options.sre_webhook_url),
        _webhook(PRODUCT_RECEIVER, options.product_webhook_url),
    ]
    for owner in plans.owner_names():
        entry = plans.owners.get(owner)
        url = entry.webhook_url if entry and entry.webhook_url else options.owner_webhook_url
        receivers.append(_webhook(owner_receiver(owner), url.replace("{owner}", owner)))
        owner_routes.append(
            {
                "receiver": owner_receiver(owner),
                "matchers": [f'owner="{owner}"'],
                **_timings(plans, owner),
            }
        )
    fast = _timings(plans)
    doc: dict[str, Any] = {
        "global": {"resolve_timeout": "5m"},
        "templates": list(options.templates),
        "route": {
            "receiver": SRE_RECEIVER,
            "group_by": ["alertname", "job"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": ['category="adoption"'],
                    "receiver": PRODUCT_RECEIVER,
                    "group_by": ["owner", "rollout"],
                    **fast,
                    "repeat_interval": "12h",
                    "routes": owner_routes,
                },
                {
                    "matchers": ['category="operational"'],
                    "receiver": SRE_RECEIVER,
                    "group_by": ["alertname", "job"],
                },
            ],
        },
        "receivers": receivers,
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname=~"{"|".join(ADOPTION_BLOCKERS)}"'],
                "target_matchers": ['category="adoption"'],
            },
            {
                "source_matchers": ['alertname="AdoptionRolloutStalled"'],
                "target_matchers": ['alertname="AdoptionBehindPlan"'],
                "equal": ["rollout", "wave"],
            },
            {
                "source_matchers": ['alertname="AdoptionSwitchoverStalled"'],
                "target_matchers": ['alertname="AdoptionSwitchoverBehindPlan"'],
                "equal": ["rollout"],
            },
            {
                "source_matchers": ['severity="critical"', 'category="operational"'],
                "target_matchers": ['severity=~"warning|info"', 'category="operational"'],
                "equal": ["instance"],
            },
        ],
    }
    return doc


def render_alertmanager_text(
    plans: PlanSet, sources: list[str], options: ReceiverOptions | None = None
) -> str:
    """The configuration's text, with a header naming the plans and the receivers to fill in."""
    header = (
        f"Generated by `adoptstream rules alertmanager {' '.join(sources)}`: do not edit, edit the plans\n"
        "(owners: <name>: webhook_url) or pass --owner-webhook-url/--sre-webhook-url/--product-webhook-url\n"
        "and render again. The 127.0.0.1:5001 URLs are placeholders: point them at your chat/paging bridge.\n"
        "Adoption alerts go to the plan's owner, operational ones to SRE; see docs/operations.md."
    )
    return dump_yaml(render_alertmanager(plans, options), header)
