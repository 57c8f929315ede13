"""A small read-only client of Prometheus' HTTP API (instant and range queries, alerts).

What the gate command and the rollout report read the recording rules with.
"""

from __future__ import annotations

import contextlib
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query (the message says which and why)."""


@dataclass(frozen=True)
class Series:
    """One series of a result: its labels and its (unix seconds, value) points, NaN dropped."""

    labels: dict[str, str]
    points: list[tuple[float, float]]

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None


class Prometheus:
    """Queries ``base_url`` (``http://127.0.0.1:9090``); every call raises PrometheusError on failure."""

    def __init__(self, base_url: str, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, **params: Any) -> Any:
        url = f"{self.base_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        where = f"Prometheus at {self.base_url}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):  # Prometheus's JSON error, else the text
                detail = json.loads(detail).get("error", detail)
            query = params.get("query", path)
            raise PrometheusError(f"{where} answered HTTP {exc.code} to {query!r}: {detail[:300]}") from None
        except ValueError as exc:
            raise PrometheusError(f"{where} answered something that is not JSON: {exc}") from None
        except OSError as exc:  # URLError, timeouts, refused connections
            raise PrometheusError(f"cannot reach {where}: {getattr(exc, 'reason', exc)}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise PrometheusError(f"{where} refused the query: {error}")
        return body.get("data") or {}

    def instant(self, expr: str, at: float | None = None) -> list[Series]:
        """An instant query (now, or at unix time ``at``)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("query", **params)
        if data["resultType"] == "scalar":
            return [_series({}, [data["result"]])]
        return [_series(r["metric"], [r["value"]]) for r in data["result"]]

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """A range query from ``start`` to ``end`` (unix seconds) every ``step`` seconds."""
        data = self._get(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:.3f}"
        )
        return [_series(r["metric"], r["values"]) for r in data["result"]]

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Prometheus holds now, pending or firing (labels, annotations, state, activeAt)."""
        return list(self._get("alerts")["alerts"])


def _series(labels: dict[str, str], values: list[list[Any]]) -> Series:
    points = [(float(t), float(v)) for t, v in values]
    return Series(dict(labels), [(t, v) for t, v in points if not math.isnan(v)])
