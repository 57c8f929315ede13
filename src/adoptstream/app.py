"""The composition root: the one place that builds a worker from its parts and runs it (`adoptstream worker`).

runtime (the stages on Kafka) and exposition (collectors, web endpoints) do not know each other: the
exposition reads the worker through the narrow protocols it declares (`TotalsSource`, `WorkerStatus`),
and this module hands the worker to it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiokafka.errors import KafkaError
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry

from adoptstream.exposition.collector import AdoptionCollector
from adoptstream.exposition.engagement import EngagementCollector
from adoptstream.exposition.operations import OperationsCollector
from adoptstream.exposition.web import WebServer
from adoptstream.exposition.webconfig import WebConfigError, load_web_config
from adoptstream.runtime.config import ConfigError, WorkerConfig, add_flags, from_flags
from adoptstream.runtime.connection import BrokerUnreachable, kafka_failure
from adoptstream.runtime.worker import Worker, tune_gc

log = logging.getLogger(__name__)


class App:
    """A worker, the registry /metrics serves, and the web endpoints."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry()  # everything /metrics serves
        self.worker = Worker(config, self.registry)  # its stage counters register here
        register_collectors(self.registry, self.worker, config)
        web_config = load_web_config(config.web_config_file) if config.web_config_file else None
        self.web = WebServer(
            self.registry, self.worker, self.worker, config.web_host, config.web_port, web_config
        )

    async def start(self) -> None:
        """The web endpoints first (/healthz answers, /ready says 503), then the worker."""
        await self.web.start()
        log.info("metrics at %s://%s:%d/metrics", self.web.scheme, self.config.web_host, self.web.port)
        await self.worker.start()

    async def run(self) -> None:
        await self.worker.run()

    def stop(self) -> None:
        self.worker.stop()

    async def close(self) -> None:
        try:
            await self.worker.close()
        finally:
            await self.web.stop()


def register_collectors(registry: CollectorRegistry, worker: Worker, config: WorkerConfig) -> None:
    """The contract families (sections 2 and 3, one feature cap), operations, process and Python metrics."""
    adoption = AdoptionCollector(
        worker, config.max_features, config.max_cohorts, max_feature_cohorts=config.max_feature_cohorts
    )
    for part in [*adoption.parts, *EngagementCollector(worker, adoption.features).parts]:
        registry.register(part)
    registry.register(OperationsCollector(worker))
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)


async def run_worker(config: WorkerConfig) -> None:
    """Run a worker until SIGINT/SIGTERM."""
    tune_gc()
    app = App(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stop)
    try:
        await app.start()
        await app.run()
    finally:
        await app.close()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """`adoptstream worker`: one flag per setting, each with its ADOPTSTREAM_* variable."""
    p = subparsers.add_parser(
        "worker",
        help="run a stream worker (ingest + exact state + /metrics)",
        description="Run one adoptstream worker. Start several with the same --app-id to share the load.",
    )
    add_flags(p, WorkerConfig)
    p.set_defaults(func=run)


def config_from(args: argparse.Namespace) -> WorkerConfig:
    """Flags win over environment variables, which win over defaults."""
    return from_flags(WorkerConfig, args)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"adoptstream worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        asyncio.run(run_worker(config))
    except (ConfigError, WebConfigError) as exc:  # a setting that cannot work, a refused login among them
        print(f"adoptstream worker: {exc}", file=sys.stderr)
        return 2
    except BrokerUnreachable as exc:
        print(f"adoptstream worker: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        message, code = kafka_failure(exc)
        print(f"adoptstream worker: {message}", file=sys.stderr)
        return code
    return 0
