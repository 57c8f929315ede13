"""``adoptstream report``: the rollout report for product owners, as a file or served live.

adoptstream report PLANS... --prometheus URL -o report.html   one self-contained page
adoptstream report PLANS... --prometheus URL --serve PORT      the same page, read anew on every request
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from adoptstream.report.data import read_report
from adoptstream.report.render import render_html
from adoptstream.rollout.cli import load_plan_files, write_output
from adoptstream.rollout.plan import PlanSet
from adoptstream.rollout.prometheus import Prometheus

DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"
SERVED_REFRESH_S = 60


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="rollout report for product owners: adoption against the plan per wave, as an HTML page",
        description="Reads Prometheus (with the rules rendered from the plans loaded) and the rollout "
        "plans, and writes one self-contained HTML page: per rollout and wave, adoption against the plan, "
        "exposed and adopted users, time to first use, stickiness and the alerts firing, in plain words.",
    )
    parser.add_argument("plans", nargs="+", metavar="PLANS.yaml")
    parser.add_argument("--prometheus", default=DEFAULT_PROMETHEUS, help="Prometheus base URL (%(default)s)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", metavar="FILE", help="write the page here (default: stdout)")
    out.add_argument("--serve", type=int, metavar="PORT", help="serve the page live on this port instead")
    parser.add_argument(
        "--host", default="127.0.0.1", help="with --serve: address to listen on (%(default)s)"
    )
    parser.set_defaults(func=run)
    return parser


def page(prometheus: Prometheus, plans: PlanSet, *, refresh_s: int | None = None) -> str:
    return render_html(read_report(prometheus, plans), refresh_s=refresh_s)


def run(args: argparse.Namespace) -> int:
    plans = load_plan_files(args.plans, "adoptstream report")
    if plans is None:
        return 1
    prometheus = Prometheus(args.prometheus)
    if args.serve is not None:
        return asyncio.run(serve(prometheus, plans, args.host, args.serve))
    write_output(page(prometheus, plans), args.output)
    return 0


async def serve(prometheus: Prometheus, plans: PlanSet, host: str, port: int) -> int:
    """Serves the page at ``/`` (read from Prometheus on every request) until interrupted."""
    from aiohttp import web

    async def report(_request: web.Request) -> web.Response:
        text = await asyncio.to_thread(page, prometheus, plans, refresh_s=SERVED_REFRESH_S)
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", report)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"adoptstream report: serving http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        pass
    finally:
        await runner.cleanup()
    return 0
