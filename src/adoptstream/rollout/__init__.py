"""Rollout plans as code: plan model and loader, Prometheus rule and Alertmanager renderers, CLI."""

from adoptstream.rollout.plan import PlanError, PlanSet, Rollout, Wave, load_plan_text, load_plans

__all__ = ["PlanError", "PlanSet", "Rollout", "Wave", "load_plan_text", "load_plans"]
