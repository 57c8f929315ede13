"""HTTP endpoints of a worker: /metrics, /healthz, /ready, /api/summary. Binds 127.0.0.1 by default.

/metrics is prometheus_client's own aiohttp handler over the worker's registry: `name[]` filtering
(the registry asks each collector's `describe()` which families it yields), OpenMetrics and gzip
negotiation, exactly as the library's exporters do. A web config file (`webconfig`) adds TLS and basic
auth the way Prometheus' own exporters do; without one the endpoints are plain HTTP.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.registry import CollectorRegistry

from adoptstream.core.totals import ANY_FEATURE
from adoptstream.exposition.collector import TotalsSource
from adoptstream.exposition.operations import WorkerStatus
from adoptstream.exposition.webconfig import BasicAuth, WebConfig


def summary(source: TotalsSource, now_ns: int | None = None) -> dict[str, Any]:
    """Per-feature adoption numbers of this worker's users (for `adoptstream-dev demo` and humans)."""
    totals = source.merged_totals()
    now_ns = now_ns or time.time_ns()
    exposed: dict[str, int] = {}
    adopted: dict[str, int] = {}
    for (feature, cohort), n in totals.exposed.items():
        exposed[feature] = exposed.get(feature, 0) + n
        adopted[feature] = adopted.get(feature, 0) + totals.adopted.get((feature, cohort), 0)
    features = {}
    for name in totals.features():
        features[name] = {
            "active": totals.active_users(name, now_ns),
            "exposed": exposed.get(name, 0),
            "adopted": adopted.get(name, 0),
            "uses": sum(totals.uses.values()) if name == ANY_FEATURE else totals.uses.get(name, 0),
        }
    return {"events": dict(totals.outcomes), "features": features}


class WebServer:
    """aiohttp server bound to one host/port (port 0 picks a free one)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        status: WorkerStatus,
        totals: TotalsSource,
        host: str,
        port: int,
        web_config: WebConfig | None = None,
    ) -> None:
        self._registry, self._status, self._totals = registry, status, totals
        self._host = host
        self.port = port
        self._web_config = web_config or WebConfig()
        self._runner: web.AppRunner | None = None

    @property
    def scheme(self) -> str:
        return self._web_config.scheme

    async def start(self) -> None:
        config = self._web_config
        app = web.Application(middlewares=[BasicAuth(config.users).middleware] if config.users else [])
        if config.headers:

            async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
                response.headers.update(config.headers)

            app.on_response_prepare.append(add_headers)
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/api/summary", self._summary)
        app.router.add_get("/", self._index)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port, ssl_context=config.tls)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready(self, _: web.Request) -> web.Response:
        ready = self._status.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _summary(self, _: web.Request) -> web.Response:
        return web.json_response(summary(self._totals))

    async def _index(self, _: web.Request) -> web.Response:
        return web.Response(
            text="adoptstream worker: /metrics (Prometheus), /healthz, /ready, /api/summary (JSON)\n"
        )
