"""HTTP endpoints of a worker: /metrics, /healthz, /ready, /api/summary. Binds 127.0.0.1 by default.

/metrics is prometheus_client's own aiohttp handler over the worker's registry: `name[]` filtering
(the registry asks each collector's `describe()` which families it yields), OpenMetrics and gzip
negotiation, exactly as the library's exporters do. It runs on the event loop that also runs the
consumers and their heartbeats, so `ScrapeGate` bounds what scrapes can take from them. A web config
file (`webconfig`) adds TLS and basic auth the way Prometheus' own exporters do; without one the
endpoints are plain HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import Counter
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


class ScrapeGate:
    """Bounds what scrapes take from the event loop: one collection at a time, shared, and a queue limit.

    A collection runs on the loop without a break (prometheus_client's handler is synchronous), and
    requests that arrive together are run back to back in one loop iteration: ten full scrapes at once
    would stall the consumers' heartbeats for ten collections. Here they wait for one collection at a
    time, with a turn of the loop (I/O, heartbeats, batches) between two, and the requests that ask for
    the same page (query and Accept header) while one is waiting share its result. Past `max_waiting`
    different pages waiting, a request gets 503 (Retry-After: 1) and is counted.
    """

    def __init__(self, handler: Handler, registry: CollectorRegistry, max_waiting: int = 4) -> None:
        self._handler = handler
        self._max_waiting = max_waiting
        self._lock = asyncio.Lock()
        self._waiting: dict[tuple[str, str], asyncio.Future[tuple[int, str, bytes]]] = {}
        self.rejected = Counter(
            "adoptstream_scrapes_rejected",
            "Scrapes answered 503 because too many different pages were already waiting to be built.",
            registry=registry,
        )

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        key = (request.query_string, ",".join(request.headers.getall(hdrs.ACCEPT, [])))
        page = self._waiting.get(key)
        if page is None:
            if len(self._waiting) >= self._max_waiting:
                self.rejected.inc()
                return web.Response(
                    status=503, text="too many scrapes at once\n", headers={"Retry-After": "1"}
                )
            page = self._waiting[key] = asyncio.get_running_loop().create_future()
            try:
                async with self._lock:
                    await asyncio.sleep(0)  # a turn of the loop between two collections; latecomers join
                    del self._waiting[key]  # from now on a request needs a collection of its own
                    response = await self._handler(request)
                    assert isinstance(response, web.Response)
                    body = response.body
                    content_type = response.headers.get(hdrs.CONTENT_TYPE, "text/plain")
                    page.set_result((response.status, content_type, body if isinstance(body, bytes) else b""))
            except BaseException as exc:
                self._waiting.pop(key, None)
                if not page.done():
                    page.set_exception(exc)
                    page.exception()  # retrieved: requests sharing it re-raise it themselves
                raise
        status, content_type, body = await asyncio.shield(page)
        response = web.Response(status=status, body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()  # per request: each negotiates its own encoding
        return response


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
        # the gate compresses each response for its own request
        self._metrics = ScrapeGate(make_aiohttp_handler(registry, disable_compression=True), registry)

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
        app.router.add_get("/metrics", self._metrics)
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
        """200 when ready; either way, the partitions held back and why (for humans and probes)."""
        status = self._status
        ready = status.ready
        progress = status.progress
        held = [
            {
                "topic": topic,
                "partition": partition,
                "stage": s.stage,
                "kind": s.kind,
                "offset": s.offset,
                "since": s.since_s,
                "reason": s.reason,
            }
            for (topic, partition), s in sorted(progress.stuck.items())
        ]
        failing = dict(progress.failing_since_s)
        body = {"ready": ready, "held_partitions": held, "failing_stages_since": failing}
        return web.json_response(body, status=200 if ready else 503)

    async def _summary(self, _: web.Request) -> web.Response:
        return web.json_response(summary(self._totals))

    async def _index(self, _: web.Request) -> web.Response:
        return web.Response(
            text="adoptstream worker: /metrics (Prometheus), /healthz, /ready, /api/summary (JSON)\n"
        )
