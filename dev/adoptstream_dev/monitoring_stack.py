"""Real Prometheus + Alertmanager + a webhook receiver on free loopback ports, for tests and the demo.

    stack = MonitoringStack(workdir, scrape_targets=["127.0.0.1:6066"],
                            rule_files=[...], alertmanager_config=lambda hook: render(...))
    stack.start()
    alert = stack.wait_for_alert(lambda a: a["labels"]["alertname"] == "AdoptionRolloutStalled", 120)
    stack.stop()

Binaries come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages (see
deploy/install-system-deps.sh). Everything listens on 127.0.0.1 only; Alertmanager's cluster listener is
switched off. Data, configs and logs live in ``workdir``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from adoptstream_dev.paths import DEPLOY
from adoptstream_dev.testing import free_port

STATIC_RULES = DEPLOY / "prometheus" / "rules" / "adoptstream.rules.yml"
TEMPLATES_DIR = DEPLOY / "alertmanager" / "templates"

Alert = dict[str, Any]
ConfigSource = str | os.PathLike[str] | Callable[[str], str] | None


class MonitoringStackError(RuntimeError):
    """Prometheus or Alertmanager did not start (the message holds its log's tail)."""


def binaries_missing() -> list[str]:
    """The Debian binaries this stack needs that are not on PATH."""
    return [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when the Python process that started it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that keeps every Alertmanager webhook notification it receives."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._notifications: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"invalid_body": body.decode("utf-8", "replace")}
                receiver._add(self.path, payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                data = json.dumps(receiver.notifications()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    @property
    def url(self) -> str:
        """Base URL; receivers post to any path under it (the path tells which receiver sent)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, path: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._notifications.append({"path": path, "received_at": time.time(), "payload": payload})
            self._lock.notify_all()

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification so far: ``{"path", "received_at", "payload"}`` (Alertmanager's JSON)."""
        with self._lock:
            return list(self._notifications)

    def alerts(self) -> list[Alert]:
        """Every alert of every notification, with ``path`` and ``receiver`` of the notification added."""
        out: list[Alert] = []
        for note in self.notifications():
            payload = note["payload"]
            for alert in payload.get("alerts", []):
                out.append({**alert, "path": note["path"], "receiver": payload.get("receiver", "")})
        return out

    def wait(self, predicate: Callable[[Alert], bool], timeout_s: float) -> Alert | None:
        """The first received alert matching ``predicate``, waiting up to ``timeout_s`` for one."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for alert in self.alerts():
                    if predicate(alert):
                        return alert
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(timeout=left)


def _default_alertmanager_config(webhook_url: str) -> str:
    """Everything to one webhook (``/all``), notified within a second."""
    doc = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "rollout", "wave"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": f"{webhook_url}/all", "send_resolved": True}]}
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


class MonitoringStack:
    """Prometheus scraping ``scrape_targets`` (job ``adoptstream``) with ``rule_files``, sending alerts to
    an Alertmanager with ``alertmanager_config``, whose webhooks can point at the built-in receiver.

    ``alertmanager_config`` is YAML text, a path, or a function of the receiver's base URL returning YAML
    (so generated configs can route owners to ``{url}/owners/<name>``); None routes everything to
    ``{url}/all``. Relative ``templates`` in it resolve against deploy/alertmanager/ (copied to workdir).
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        scrape_targets: Sequence[str] = (),
        rule_files: Sequence[str | os.PathLike[str]] | None = None,
        alertmanager_config: ConfigSource = None,
        scrape_interval_s: float = 1,
        evaluation_interval_s: float = 1,
        *,
        job: str = "adoptstream",
        ready_timeout_s: float = 60,
        targets: Sequence[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        plan_files: Sequence[str | os.PathLike[str]] = (),
        scrape_config: dict[str, Any] | None = None,
        extra_scrape_configs: Sequence[dict[str, Any]] = (),
    ) -> None:
        """`scrape_config`: more keys of the job's scrape config (scheme, tls_config, basic_auth...);
        `extra_scrape_configs`: whole further scrape configs."""
        directory = workdir if workdir is not None else data_dir
        if directory is None:
            raise TypeError("MonitoringStack needs a workdir")
        self.workdir = Path(directory).resolve()  # the binaries run with it as cwd
        self.scrape_targets = [t.removeprefix("http://").rstrip("/") for t in (targets or scrape_targets)]
        self.rule_files = [
            Path(p).resolve() for p in (rule_files if rule_files is not None else [STATIC_RULES])
        ]
        self.alertmanager_config = alertmanager_config
        self.plan_files = [Path(p).resolve() for p in plan_files]  # the rollout plans behind its rules
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s
        self.job = job
        self.scrape_config = dict(scrape_config or {})
        self.extra_scrape_configs = list(extra_scrape_configs)
        self.ready_timeout_s = ready_timeout_s
        self.webhook = WebhookReceiver()
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started = False

    # -- addresses ------------------------------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    @property
    def webhook_url(self) -> str:
        return self.webhook.url

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> MonitoringStack:
        """Starts the receiver, Alertmanager, then Prometheus, and waits until both answer /-/ready."""
        missing = binaries_missing()
        if missing:
            raise MonitoringStackError(
                f"{', '.join(missing)} not installed (bash deploy/install-system-deps.sh)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.webhook.start()
        self._started = True
        try:
            self._start_alertmanager()
            self._start_prometheus()
            self._wait_ready("alertmanager", self.alertmanager_url)
            self._wait_ready("prometheus", self.prometheus_url)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10) -> None:
        """Stops Prometheus, Alertmanager (SIGTERM, then SIGKILL) and the receiver."""
        for name in ("prometheus", "alertmanager"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._started:
            self._started = False
            self.webhook.stop()

    def __enter__(self) -> MonitoringStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_path(self, name: str) -> Path:
        """``prometheus`` or ``alertmanager`` log file."""
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - handed to the child
        try:
            self._procs[name] = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            log.close()

    def _alertmanager_yaml(self) -> str:
        source = self.alertmanager_config
        if source is None:
            return _default_alertmanager_config(self.webhook.url)
        if callable(source):
            return source(self.webhook.url)
        if isinstance(source, str) and "\n" in source:
            return source
        return Path(source).read_text(encoding="utf-8")

    def _start_alertmanager(self) -> None:
        am_dir = self.workdir / "alertmanager"
        am_dir.mkdir(parents=True, exist_ok=True)
        if TEMPLATES_DIR.is_dir():
            shutil.copytree(TEMPLATES_DIR, am_dir / "templates", dirs_exist_ok=True)
        config = am_dir / "alertmanager.yml"
        config.write_text(self._alertmanager_yaml(), encoding="utf-8")
        self._spawn(
            "alertmanager",
            [
                shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
                f"--config.file={config}",
                f"--storage.path={am_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                f"--web.external-url={self.alertmanager_url}",
                "--cluster.listen-address=",
                "--log.level=info",
            ],
        )

    def prometheus_config(self) -> dict[str, Any]:
        """The Prometheus configuration the stack runs with."""
        interval = f"{max(1, int(self.scrape_interval_s * 1000))}ms"
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": f"{max(1, int(self.evaluation_interval_s * 1000))}ms",
            },
            "rule_files": [str(p) for p in self.rule_files],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": list(self.scrape_targets)}],
                    **self.scrape_config,
                },
                *self.extra_scrape_configs,
            ],
        }

    def _start_prometheus(self) -> None:
        prom_dir = self.workdir / "prometheus"
        prom_dir.mkdir(parents=True, exist_ok=True)
        config = prom_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.prometheus_config(), sort_keys=False), encoding="utf-8")
        self._spawn(
            "prometheus",
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={prom_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--storage.tsdb.retention.time=1d",
                "--rules.alert.resend-delay=1s",
                "--log.level=info",
            ],
        )

    def _wait_ready(self, name: str, base: str) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        proc = self._procs[name]
        while True:
            if proc.poll() is not None:
                raise MonitoringStackError(
                    f"{name} exited with code {proc.returncode}; log tail:\n{_tail(self.log_path(name))}"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                raise MonitoringStackError(
                    f"{name} not ready after {self.ready_timeout_s:.0f}s; "
                    f"log tail:\n{_tail(self.log_path(name))}"
                )
            time.sleep(0.1)

    # -- reading ----------------------------------------------------------------------------------------

    def _get(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        if isinstance(body, dict) and body.get("status") == "error":
            raise MonitoringStackError(f"{url}: {body.get('error')}")
        return body.get("data") if isinstance(body, dict) and "data" in body else body

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query: the result vector (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        data = self._get(f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        return list(data.get("result", []))

    def prometheus_alerts(self) -> list[Alert]:
        """Alerts Prometheus holds now, pending or firing (``state``, ``labels``, ``annotations``...)."""
        return list(self._get(f"{self.prometheus_url}/api/v1/alerts").get("alerts", []))

    def alertmanager_alerts(self) -> list[Alert]:
        """Alerts Alertmanager holds now (v2 API), with their inhibition/silence status."""
        return list(self._get(f"{self.alertmanager_url}/api/v2/alerts"))

    def targets_up(self) -> bool:
        """True when every scrape target was scraped successfully last time."""
        active = self._get(f"{self.prometheus_url}/api/v1/targets").get("activeTargets", [])
        return bool(active) and all(t.get("health") == "up" for t in active)

    def rule_health(self) -> list[dict[str, Any]]:
        """Rules whose last evaluation failed (``[{"name", "lastError"}]``)."""
        bad = []
        for group in self._get(f"{self.prometheus_url}/api/v1/rules").get("groups", []):
            for rule in group.get("rules", []):
                if rule.get("health") == "err":
                    bad.append({"name": rule.get("name"), "lastError": rule.get("lastError")})
        return bad

    def received_alerts(self) -> list[Alert]:
        """Every alert the webhook received (``labels``, ``annotations``, ``status``, ``path``, ...)."""
        return self.webhook.alerts()

    def wait_for_alert(self, predicate: Callable[[Alert], bool], timeout_s: float) -> Alert | None:
        """The first webhook alert matching ``predicate``, waiting up to ``timeout_s``; None if none came."""
        return self.webhook.wait(predicate, timeout_s)
