"""ScrapeGate: one collection at a time, shared by the requests that ask for the same page, 503 past the
queue limit, and each response negotiated for its own request."""

from __future__ import annotations

import asyncio
import gzip

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from adoptstream.exposition.web import ScrapeGate


def gate(delay_s: float = 0.05) -> tuple[ScrapeGate, list[str], CollectorRegistry]:
    """A gate over a handler that takes `delay_s` per collection and records what it was asked."""
    calls: list[str] = []
    registry = CollectorRegistry()

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.query_string)
        await asyncio.sleep(delay_s)  # a long collection (the real one blocks the loop instead)
        body = ("page " + request.query_string + "\n" + "x" * 2000).encode()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    return ScrapeGate(handler, registry, max_waiting=4), calls, registry


async def client_for(scrape_gate: ScrapeGate) -> TestClient:
    app = web.Application()
    app.router.add_get("/metrics", scrape_gate)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_concurrent_requests_for_the_same_page_share_a_collection() -> None:
    scrape_gate, calls, _ = gate()
    client = await client_for(scrape_gate)
    try:
        first = asyncio.ensure_future(client.get("/metrics"))
        await asyncio.sleep(0.01)  # the first collection is running: the next ten wait together
        rest = await asyncio.gather(*(client.get("/metrics") for _ in range(10)))
        responses = [await first, *rest]
        bodies = {await r.read() for r in responses}
        assert [r.status for r in responses] == [200] * 11
        assert len(bodies) == 1
        assert len(calls) == 2  # the running one, and one for the ten that waited
        assert responses[0].headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        await client.close()


async def test_different_pages_past_the_limit_get_503() -> None:
    scrape_gate, calls, registry = gate()
    client = await client_for(scrape_gate)
    try:
        responses = await asyncio.gather(*(client.get(f"/metrics?name[]=m{i}") for i in range(8)))
        served = sum(r.status == 200 for r in responses)
        rejected = sum(r.status == 503 for r in responses)
        # four pages waiting at most, plus the one being built when the others arrived
        assert served + rejected == 8 and 4 <= served <= 5 and served == len(calls)
        assert all(r.headers["Retry-After"] == "1" for r in responses if r.status == 503)
        assert f"adoptstream_scrapes_rejected_total {rejected}.0".encode() in generate_latest(registry)
    finally:
        await client.close()


async def test_each_request_negotiates_its_own_compression() -> None:
    scrape_gate, _, _ = gate(delay_s=0.01)
    client = await client_for(scrape_gate)
    try:
        zipped, plain = await asyncio.gather(
            client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False),
            client.get("/metrics", headers={"Accept-Encoding": "identity"}, auto_decompress=False),
        )
        assert zipped.headers.get("Content-Encoding") == "gzip"
        assert "Content-Encoding" not in plain.headers
        assert gzip.decompress(await zipped.read()) == await plain.read()
    finally:
        await client.close()


async def test_a_failing_collection_fails_every_request_sharing_it_and_not_the_next() -> None:
    registry = CollectorRegistry()
    fail = [True]

    async def handler(_: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        if fail[0]:
            raise RuntimeError("collector broke")
        return web.Response(text="ok")

    client = await client_for(ScrapeGate(handler, registry))
    try:
        statuses = [r.status for r in await asyncio.gather(*(client.get("/metrics") for _ in range(3)))]
        assert statuses == [500, 500, 500]
        fail[0] = False
        assert (await client.get("/metrics")).status == 200
    finally:
        await client.close()
