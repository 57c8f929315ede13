"""HTTP endpoints of a worker: /metrics, /healthz, /ready, /api/summary. Binds 127.0.0.1 by default."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from adoptstream.core.totals import ANY_FEATURE
from adoptstream.exposition.collector import restricted

if TYPE_CHECKING:
    from adoptstream.runtime.worker import Worker


def summary(worker: Worker, now_ns: int | None = None) -> dict[str, Any]:
    """Per-feature adoption numbers of this worker's users (for `adoptstream demo` and humans)."""
    assert worker.processor is not None
    totals = worker.processor.merged_totals()
    now_ns = now_ns or time.time_ns()
    exposed: dict[str, int] = {}
    adopted: dict[str, int] = {}
    for (feature, _), n in totals.exposed.items():
        exposed[feature] = exposed.get(feature, 0) + n
        adopted[feature] = adopted.get(feature, 0) + totals.adopted.get((feature, _), 0)
    features = {}
    for name in totals.features():
        active = totals.active_users(name, now_ns)
        features[name] = {
            "active": active,
            "exposed": exposed.get(name, 0),
            "adopted": adopted.get(name, 0),
            "uses": sum(totals.uses.values()) if name == ANY_FEATURE else totals.uses.get(name, 0),
        }
    return {"events": dict(totals.outcomes), "features": features}


class _Named:
    """The samples of a `/metrics?name[]=...` query, building only the families asked for."""

    def __init__(self, worker: Worker, names: set[str]) -> None:
        self._worker, self._names = worker, names

    def collect(self) -> Iterator[Metric]:
        yield from restricted(self._worker.stats.registry.collect(), self._names)
        for collector in self._worker.collectors:
            yield from collector.collect_named(self._names)


class WebServer:
    """aiohttp server bound to one host/port (port 0 picks a free one)."""

    def __init__(self, worker: Worker, host: str, port: int) -> None:
        self._worker = worker
        self._host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/api/summary", self._summary)
        app.router.add_get("/", self._index)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        names = request.query.getall("name[]", [])
        body = generate_latest(_Named(self._worker, set(names)) if names else self._worker.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready(self, _: web.Request) -> web.Response:
        w = self._worker
        ready = w.ready and not (w.processor and w.processor.restoring)
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _summary(self, _: web.Request) -> web.Response:
        return web.json_response(summary(self._worker))

    async def _index(self, _: web.Request) -> web.Response:
        return web.Response(
            text="adoptstream worker: /metrics (Prometheus), /healthz, /ready, /api/summary (JSON)\n"
        )
