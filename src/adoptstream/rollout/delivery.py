"""Gates for progressive-delivery tools, from rollout plans: an Argo Rollouts ``AnalysisTemplate`` and a
Flagger ``MetricTemplate`` per rollout, the wave given as an argument / template variable.

Both query the recorded verdict ``adoptstream:rollout_wave_gate:verdict`` (0 pass, 1 fail, 2 cannot tell
yet) that the rules rendered from the same plan keep, the series ``adoptstream gate`` reads: the tools
judge nothing themselves, so they agree with the command and the alerts.

* Argo Rollouts: ``successCondition: result[0] == 0``, ``failureCondition: result[0] == 1``; a 2 is
  neither, so the measurement is Inconclusive and the Rollout pauses until someone resumes it.
* Flagger has no "inconclusive": the Canary's ``thresholdRange: {max: 0}`` passes a 0 and halts the
  advancement on a 1 or a 2 (each halt counts towards the Canary's ``threshold`` of failed checks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from adoptstream.rollout.plan import PlanSet, Rollout
from adoptstream.rollout.promql import quote
from adoptstream.rollout.rules import GATE_FAIL, GATE_PASS, WAVE_GATE, dump_yaml

DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus.monitoring.svc:9090"
ARGO_METRIC = "adoption-gate"
ARGO_SUCCESS = f"result[0] == {GATE_PASS}"
ARGO_FAILURE = f"result[0] == {GATE_FAIL}"
FLAGGER_THRESHOLD_RANGE = {"max": GATE_PASS}  # for the Canary's metric: only a pass advances
ANNOTATION = "adoptstream"  # annotation prefix: adoptstream/rollout, adoptstream/waves, ...


class GateRenderError(ValueError):
    """A plan whose rollouts cannot become templates (e.g. two names that make the same object name)."""


@dataclass(frozen=True)
class GateOptions:
    """Where the tools find Prometheus (Argo: the default of the ``prometheus-address`` argument)."""

    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS


def object_name(rollout: Rollout) -> str:
    """The Kubernetes name of a rollout's templates: ``adoption-gate-<rollout>``, a DNS-1123 subdomain."""
    slug = re.sub(r"[^a-z0-9.-]+", "-", rollout.name.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-.")
    return f"adoption-gate-{slug}"[:253].rstrip("-.")


def verdict_query(rollout: Rollout, wave_placeholder: str) -> str:
    """PromQL for a wave's verdict, the wave left to the tool's templating inside a raw string."""
    return f"{WAVE_GATE}{{rollout={quote(rollout.name)},wave=`{wave_placeholder}`}}"


def _annotations(rollout: Rollout) -> dict[str, str]:
    return {
        f"{ANNOTATION}/rollout": rollout.name,
        f"{ANNOTATION}/feature": rollout.feature,
        f"{ANNOTATION}/owner": rollout.owner,
        f"{ANNOTATION}/waves": ", ".join(w.name for w in rollout.waves),
    }


def analysis_template(rollout: Rollout, options: GateOptions) -> dict[str, Any]:
    """The Argo Rollouts AnalysisTemplate: one measurement of the wave's verdict."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": object_name(rollout), "annotations": _annotations(rollout)},
        "spec": {
            "args": [
                {"name": "wave"},
                {"name": "prometheus-address", "value": options.prometheus_address},
            ],
            "metrics": [
                {
                    "name": ARGO_METRIC,
                    "count": 1,
                    "failureLimit": 0,
                    "successCondition": ARGO_SUCCESS,
                    "failureCondition": ARGO_FAILURE,
                    "provider": {
                        "prometheus": {
                            "address": "{{args.prometheus-address}}",
                            "query": verdict_query(rollout, "{{args.wave}}"),
                        }
                    },
                }
            ],
        },
    }


def metric_template(rollout: Rollout, options: GateOptions) -> dict[str, Any]:
    """The Flagger MetricTemplate: the wave's verdict (use it with ``thresholdRange: {max: 0}``)."""
    annotations = {**_annotations(rollout), f"{ANNOTATION}/threshold-range": "max: 0"}
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": object_name(rollout), "annotations": annotations},
        "spec": {
            "provider": {"type": "prometheus", "address": options.prometheus_address},
            "query": verdict_query(rollout, "{{ variables.wave }}"),
        },
    }


def render_gates(plans: PlanSet, options: GateOptions | None = None) -> dict[str, dict[str, Any]]:
    """File name -> object: ``<name>.analysistemplate.yaml`` and ``<name>.metrictemplate.yaml`` per rollout
    with waves (a parallel rollout's switch-over has no wave to gate)."""
    options = options or GateOptions()
    problems: list[str] = []
    seen: dict[str, str] = {}
    out: dict[str, dict[str, Any]] = {}
    for rollout in plans.rollouts:
        if not rollout.waves:
            continue
        name = object_name(rollout)
        if name in seen:
            problems.append(
                f"{rollout.source}: rollouts {seen[name]!r} and {rollout.name!r} both make the template name "
                f"{name!r}: rename one of them"
            )
        seen.setdefault(name, rollout.name)
        for wave in rollout.waves:
            if "`" in wave.name:
                problems.append(
                    f"{rollout.source}: wave {wave.name!r} of {rollout.name!r} has a backtick, which the "
                    "templates' PromQL raw string cannot hold: rename the wave"
                )
        out[f"{name}.analysistemplate.yaml"] = analysis_template(rollout, options)
        out[f"{name}.metrictemplate.yaml"] = metric_template(rollout, options)
    if problems:
        raise GateRenderError("\n".join(problems))
    return out


def render_gates_text(
    plans: PlanSet, sources: list[str], options: GateOptions | None = None
) -> dict[str, str]:
    """File name -> YAML text, each with a header naming the plans and the command that made it."""
    header = (
        f"Generated by `adoptstream rules gates {' '.join(sources)}` from the rollout plans: do not edit,\n"
        "edit the plans and render again. docs/rollouts.md shows how to hold a rollout on it."
    )
    return {name: dump_yaml(doc, header) for name, doc in render_gates(plans, options).items()}
