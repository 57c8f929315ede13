"""`adoptstream-dev demo`: worker + live traffic + a refreshed adoption table (the job of `make demo`).

Starts one worker subprocess, waits for /ready, publishes a backfill of historical events and then live
traffic in-process, and redraws a per-feature table from the worker's /api/summary every 2 s. When
Prometheus, Alertmanager and `adoptstream_dev.monitoring_stack` are available it also runs them with the rules
of a demo rollout plan and lists received alerts under the table. Ctrl-C (or --duration) stops everything
in order: traffic, worker (SIGTERM, then SIGKILL), monitoring, and the local broker (`kafka down`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from adoptstream.core.totals import ANY_FEATURE
from adoptstream.runtime.config import ConfigError, TopicSettings, add_flags, from_flags
from adoptstream_dev.testing import WorkerProcess, port_in_use

REFRESH_S = 2.0
READY_TIMEOUT_S = 120.0
WORKER_STOP_TIMEOUT_S = 20.0
OUTCOMES = ("accepted", "duplicate", "invalid", "future")
CLEAR = "\x1b[H\x1b[2J"


# -- the table -------------------------------------------------------------------------------------


def _ratio(num: int, den: int) -> str:
    return f"{100 * num / den:.1f}%" if den else "-"


def render_table(summary: dict[str, Any], width: int = 110) -> str:
    """The per-feature table and the outcome line, from a worker's /api/summary JSON."""
    features: dict[str, dict[str, Any]] = summary.get("features", {})
    header = ("feature", "active 1d", "7d", "30d", "sticky", "exposed", "adopted", "adoption", "uses")
    rows: list[tuple[str, ...]] = []

    def order(item: tuple[str, dict[str, Any]]) -> tuple[int, int, str]:
        name, f = item
        return (0 if name == ANY_FEATURE else 1, -int(f.get("uses", 0)), name)

    for name, f in sorted(features.items(), key=order):
        active = f.get("active", {})
        a1, a7, a30 = (int(active.get(w, 0)) for w in ("1d", "7d", "30d"))
        exposed, adopted, uses = int(f.get("exposed", 0)), int(f.get("adopted", 0)), int(f.get("uses", 0))
        label = "* (any feature)" if name == ANY_FEATURE else name
        rows.append(
            (
                label,
                f"{a1:,}",
                f"{a7:,}",
                f"{a30:,}",
                _ratio(a1, a30),
                f"{exposed:,}",
                f"{adopted:,}",
                _ratio(adopted, exposed),
                f"{uses:,}",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    widths[0] = min(max(widths[0], 16), 40)

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0][: widths[0]].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"{first}  {rest}"

    out = [line(header), "-" * min(width, len(line(header)))]
    out += [line(r) for r in rows] or ["(no accepted events yet)"]
    events = summary.get("events", {})
    parts = [f"{o} {int(events.get(o, 0)):,}" for o in OUTCOMES]
    parts += [f"{k} {int(v):,}" for k, v in sorted(events.items()) if k not in OUTCOMES]
    out += ["", "events by outcome: " + ", ".join(parts)]
    out.append("sticky = active 1d / active 30d; adoption = adopted / exposed (* exposed = signed up)")
    return "\n".join(out)


# -- processes -------------------------------------------------------------------------------------


def _tail(path: Path | None, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path else ""
    except OSError:
        return ""


def demo_worker(broker: str, topic: str, port: int, data_dir: Path) -> WorkerProcess:
    """The demo's worker: its own session (Ctrl-C reaches only the demo, which stops it), own app id."""
    # own consumer groups and internal topics: never joins a real deployment's
    return WorkerProcess(
        broker, topic, data_dir / "worker", app_id="adoptstream-demo", port=port, new_session=True
    )


async def wait_ready(worker: WorkerProcess, session: aiohttp.ClientSession, timeout_s: float) -> None:
    """Poll /ready until 200; raise RuntimeError when the worker exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not worker.alive():
            code = worker.proc.returncode if worker.proc else None
            raise RuntimeError(f"worker exited with code {code}; log tail:\n{_tail(worker.log_path)}")
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.get(worker.url("/ready")) as resp:
                if resp.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"worker not ready after {timeout_s:.0f} s; log tail:\n{_tail(worker.log_path)}"
            )
        await asyncio.sleep(0.2)


async def stop_worker(
    worker: WorkerProcess, timeout_s: float = WORKER_STOP_TIMEOUT_S, hurry: Callable[[], bool] = lambda: False
) -> str:
    """SIGTERM, wait (until `hurry()` says not to), then SIGKILL; says how it went."""
    proc = worker.proc
    if proc is None or proc.poll() is not None:
        return "worker had already exited"
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline and not hurry():
        await asyncio.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        return f"worker (pid {proc.pid}) did not stop in time: killed"
    return f"worker (pid {proc.pid}) stopped"


# -- optional monitoring stack ---------------------------------------------------------------------


class Monitoring:
    """Prometheus + Alertmanager + webhook receiver (`adoptstream_dev.monitoring_stack`) with the rules of a
    demo rollout plan (`adoptstream_dev.scenario.StallScenario`: one wave climbs to its target, one
    stalls) and the scenario's traffic. Optional: `note` says why it is not running.
    """

    def __init__(self, workdir: Path, stall_window_s: int = 40) -> None:
        self.workdir = workdir.resolve()  # the stack runs its processes from inside it
        self.stall_window_s = stall_window_s
        self.stack: Any = None
        self.scenario: Any = None
        self.note = "monitoring: starting Prometheus and Alertmanager ..."

    @property
    def active(self) -> bool:
        return self.stack is not None

    def unavailable(self) -> str | None:
        """Why the stack cannot run here, or None."""
        missing = [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]
        if missing:
            return f"{', '.join(missing)} not installed; `make system-deps` as root installs them"
        for module in ("adoptstream_dev.monitoring_stack", "adoptstream_dev.scenario"):
            if importlib.util.find_spec(module) is None:
                return f"{module} not available"
        return None

    async def start(self, worker_target: str) -> bool:
        """Render the demo plan's rules and routes, start the stack; False (with `note`) if it can't."""
        why = self.unavailable()
        if why is not None:
            self.note = f"monitoring: skipped ({why})"
            return False
        try:
            from adoptstream_dev.scenario import StallScenario, scenario_stack

            shutil.rmtree(self.workdir, ignore_errors=True)  # fresh TSDB and configs every run
            scenario = StallScenario(window_s=self.stall_window_s)
            stack = scenario_stack(scenario, self.workdir, [worker_target])
            plan = self.workdir / "plan.yaml"
            await asyncio.to_thread(stack.start)
        except Exception as exc:  # optional part: never let it break the demo
            reason = str(exc).splitlines()[0].removesuffix("; log tail:") if str(exc) else ""
            self.note = f"monitoring: skipped ({type(exc).__name__}: {reason[:150]}; logs in {self.workdir})"
            return False
        self.stack, self.scenario = stack, scenario
        sc = scenario
        story = (
            f"demo plan {plan}: rollout {sc.rollout} of {sc.feature}, target {sc.target:.0%}; wave "
            f"{sc.healthy_wave} climbs, wave {sc.stalled_wave} stalls at "
            f"{sc.stalled_adopters / sc.users_per_wave:.0%} -> AdoptionRolloutStalled to owner {sc.owner} "
            f"after its {sc.window_s} s stall window (about a minute)"
        )
        self.note = "\n".join(
            [
                f"monitoring: Prometheus {stack.prometheus_url}  Alertmanager {stack.alertmanager_url}",
                *textwrap.wrap(story, 110, subsequent_indent="  "),
            ]
        )
        return True

    async def run_scenario(self, publisher: Any, stop: asyncio.Event) -> None:
        """Publish the scenario's events at its own pace (once a second) until `stop`."""
        import orjson

        began = time.monotonic()
        while not stop.is_set():
            for event in self.scenario.events_due(time.monotonic() - began, time.time_ns() // 1_000_000):
                publisher.add(orjson.dumps(event))
            await publisher.send_pending()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    def alert_lines(self, width: int = 110) -> list[str]:
        """The latest state of every alert the webhook received, one or two lines each."""
        if self.stack is None:
            return []
        latest: dict[str, dict[str, Any]] = {}
        for alert in self.stack.received_alerts():
            labels = alert.get("labels", {})
            key = alert.get("fingerprint") or repr(sorted(labels.items()))
            latest[key] = alert
        lines = []
        for alert in list(latest.values())[-8:]:
            labels = alert.get("labels", {})
            where = " / ".join(labels[k] for k in ("rollout", "wave") if labels.get(k))
            where = where or labels.get("feature") or labels.get("instance", "")
            lines.append(
                f"  {alert.get('status', '?').upper():8} {labels.get('alertname', '?')}  {where}  -> "
                f"{alert.get('receiver', '?')} ({alert.get('path', '')})"[:width]
            )
            summary = alert.get("annotations", {}).get("summary")
            if summary:
                lines += textwrap.wrap(summary, width, initial_indent=" " * 11, subsequent_indent=" " * 11)
        return lines

    async def stop(self) -> str:
        if self.stack is None:
            return ""
        stack, self.stack = self.stack, None
        try:
            await asyncio.to_thread(stack.stop)
        except Exception as exc:
            return f"monitoring stack stop failed: {exc}"
        return "Prometheus, Alertmanager and the webhook receiver stopped"


async def _monitoring_flow(
    monitoring: Monitoring, worker_target: str, publisher: Any, stop: asyncio.Event
) -> None:
    """Start the stack (in the background of the table), then drive the scenario's traffic."""
    if await monitoring.start(worker_target) and not stop.is_set():
        await monitoring.run_scenario(publisher, stop)


# -- the run ---------------------------------------------------------------------------------------


async def run_demo(args: argparse.Namespace, out: Any = None) -> int:
    """The whole demo; returns the exit code."""
    from adoptstream.publish import Publisher, PublishError
    from adoptstream_dev.generate import TrafficGenerator, run_live

    out = out or sys.stdout
    tty = out.isatty()

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    settings: TopicSettings = args.settings
    bootstrap, topic = settings.bootstrap_servers, settings.topic
    data_dir = Path(args.data_dir)
    if port_in_use(args.web_port):
        say(f"demo: port {args.web_port} on 127.0.0.1 is in use (another demo or worker?); try --web-port")
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupts = [0]

    def on_signal() -> None:
        interrupts[0] += 1  # a second Ctrl-C: don't wait for the worker, kill it
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if args.duration is not None:
        loop.call_later(args.duration, stop.set)

    say(f"demo: broker {bootstrap}, topic {topic}, data in {data_dir}")
    publisher = Publisher(settings, topic, client_id="adoptstream-demo")
    worker = demo_worker(settings.broker, topic, args.web_port, data_dir)
    monitoring = Monitoring(data_dir / "monitoring", args.stall_window)
    live_task: asyncio.Task[None] | None = None
    monitoring_task: asyncio.Task[None] | None = None
    code = 0
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            try:
                await publisher.start()  # creates the topic with the worker's partition count
            except PublishError as exc:
                say(f"demo: {exc}\ndemo: is Kafka running? `make kafka-up` starts a local broker")
                return 1
            worker.start()
            pid = worker.proc.pid if worker.proc else "?"
            say(f"demo: worker starting (pid {pid}, log {worker.log_path})")
            ready = asyncio.create_task(wait_ready(worker, session, READY_TIMEOUT_S))
            await asyncio.wait([ready, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                say("demo: stopped before the worker was ready")
                return 0
            ready.result()
            metrics, summary = worker.url("/metrics"), worker.url("/api/summary")
            say(f"demo: worker ready; metrics at {metrics} (JSON: {summary})")

            gen = TrafficGenerator(
                args.seed if args.seed is not None else int(time.time()),
                args.users,
                duplicate_ratio=0.01,
                invalid_ratio=0.002,
            )
            if args.backfill > 0:
                for line in gen.events(args.backfill):
                    publisher.add(line)
                await publisher.flush()
                say(f"demo: backfilled {args.backfill:,} events of the past 30 days")
            live_task = asyncio.create_task(run_live(gen, publisher, args.rate, stop))
            say(f"demo: live traffic at {args.rate:g} events/s")

            if args.no_monitoring:
                monitoring.note = "monitoring: off (--no-monitoring)"
            else:
                target = worker.target
                monitoring_task = asyncio.create_task(_monitoring_flow(monitoring, target, publisher, stop))
            say("demo: Ctrl-C stops everything")
            code = await _refresh_loop(session, worker, publisher, monitoring, stop, args, started, tty, say)
        except RuntimeError as exc:
            say(f"demo: {exc}")
            code = 1
        finally:
            stop.set()
            hurry = lambda: interrupts[0] > 1  # noqa: E731
            await _shutdown(publisher, [live_task, monitoring_task], worker, monitoring, args, hurry, say)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return code


async def _refresh_loop(
    session: aiohttp.ClientSession,
    worker: WorkerProcess,
    publisher: Any,
    monitoring: Monitoring,
    stop: asyncio.Event,
    args: argparse.Namespace,
    started: float,
    tty: bool,
    say: Callable[[str], None],
) -> int:
    """Redraw the table every REFRESH_S until `stop`; 1 if the worker died."""
    last_sent, last_t = publisher.stats.sent, time.monotonic()
    while not stop.is_set():
        if not worker.alive():
            code = worker.proc.returncode if worker.proc else None
            say(f"demo: the worker exited (code {code}); log tail:\n{_tail(worker.log_path)}")
            return 1
        try:
            async with session.get(worker.url("/api/summary")) as resp:
                resp.raise_for_status()
                body = render_table(await resp.json())
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            body = f"(worker not answering /api/summary: {type(exc).__name__} {exc})"
        now = time.monotonic()
        stats = publisher.stats
        rate = (stats.sent - last_sent) / (now - last_t) if now > last_t else 0.0
        last_sent, last_t = stats.sent, now
        head = (
            f"adoptstream demo - topic {args.settings.topic} - up {now - started:,.0f} s - "
            f"published {stats.sent:,} ({rate:,.0f}/s) - {worker.url('/metrics')}"
        )
        screen = [head, "", body]
        screen += ["", monitoring.note]
        if monitoring.active:
            alerts = monitoring.alert_lines()
            screen += ["alerts received by the webhook:", *(alerts or ["  (none yet)"])]
        screen += ["", "Ctrl-C to stop"]
        text = "\n".join(screen)
        say(CLEAR + text if tty else text + "\n")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REFRESH_S)
    return 0


async def _shutdown(
    publisher: Any,
    tasks: list[asyncio.Task[None] | None],
    worker: WorkerProcess,
    monitoring: Monitoring,
    args: argparse.Namespace,
    hurry: Callable[[], bool],
    say: Callable[[str], None],
) -> None:
    """Stop in order: traffic, worker, monitoring, broker. Tells what it did."""
    say("\ndemo: stopping ... (Ctrl-C again: don't wait for the worker)")
    for task in tasks:
        if task is not None:
            with contextlib.suppress(Exception):  # they end at `stop`; a stack start finishes first
                await asyncio.wait_for(task, timeout=90)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(publisher.flush(), timeout=10)
    await publisher.stop(timeout_s=5)
    say(f"demo: traffic stopped ({publisher.stats.sent:,} events published)")
    if worker.proc is not None:
        say("demo: " + await stop_worker(worker, WORKER_STOP_TIMEOUT_S, hurry))
    note = await monitoring.stop()
    if note:
        say("demo: " + note)
    if args.kafka_dir is None:
        say("demo: Kafka left running (no --kafka-dir given)")
    elif args.no_kafka_down:
        say(
            "demo: Kafka left running (--no-kafka-down); stop it with: "
            f"adoptstream-dev kafka down --dir {args.kafka_dir}"
        )
    else:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adoptstream_dev",
            "kafka",
            "down",
            "--dir",
            str(args.kafka_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        output, _ = await proc.communicate()
        text = output.decode(errors="replace").strip()
        say(f"demo: kafka down: {text}" if text else f"demo: kafka down exited with {proc.returncode}")
    say("demo: everything stopped, nothing left running")


# -- CLI -------------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="worker + live synthetic traffic + a refreshed adoption table (what `make demo` runs)",
        description="Start a worker, publish backfill + live synthetic traffic, and show the adoption "
        "numbers every 2 s. Ctrl-C stops everything, including the local broker from --kafka-dir.",
    )
    add_flags(p, TopicSettings, only=("broker", "topic"))
    p.add_argument("--web-port", type=int, default=6066, help="worker's /metrics port (6066)")
    p.add_argument("--kafka-dir", type=Path, default=None, help="local broker to stop at the end")
    p.add_argument("--no-kafka-down", action="store_true", help="leave the local broker running")
    p.add_argument("--data-dir", default=".run/demo", help="worker state and logs (.run/demo)")
    p.add_argument("--rate", type=float, default=300, help="live events per second (300)")
    p.add_argument("--backfill", type=int, default=20_000, help="historical events published first (20000)")
    p.add_argument("--users", type=int, default=2000, help="user population (2000)")
    p.add_argument("--seed", type=int, default=None, help="traffic seed (default: the clock)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--no-monitoring", action="store_true", help="do not start Prometheus/Alertmanager")
    p.add_argument(
        "--stall-window",
        type=int,
        default=40,
        metavar="S",
        help="the demo plan's stall window: how long the stalled wave stays flat before its alert (40)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        args.settings = from_flags(TopicSettings, args)
    except ConfigError as exc:
        print(f"adoptstream-dev demo: {exc}", file=sys.stderr)
        return 2
    if args.rate <= 0:
        print("adoptstream-dev demo: --rate must be > 0", file=sys.stderr)
        return 2
    return asyncio.run(run_demo(args))
