"""Headless Chromium driven over the DevTools protocol, to look at a page as a person would.

    with Browser(tmp_path / "profile") as browser:
        page = browser.open("file:///.../report.html")   # or http://127.0.0.1:PORT/
        page.console_errors, page.requests, page.evaluate("document.title"), page.screenshot(path)

Debian's ``chromium`` (``/usr/bin/chromium``) with a fresh profile, no sandbox, no GPU, no background
networking; the DevTools endpoint listens on a free loopback port. The client is aiohttp's websocket
(already a dependency): no browser download, no extra package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_missing() -> bool:
    return shutil.which("chromium") is None and not Path(CHROMIUM).exists()


@dataclass
class Page:
    """What a page did while it loaded: its console errors, exceptions and every request it made."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _browser: Browser | None = None
    _session: str = ""

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        assert self._browser is not None
        result = self._browser.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, self._session
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, width: int = 1280) -> Path:
        """A PNG of the whole page (all of its height) at ``width`` CSS pixels."""
        assert self._browser is not None
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 800)
        self._browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            self._session,
        )
        shot = self._browser.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, self._session
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Browser:
    """One headless Chromium process and its DevTools websocket (a private event loop in this thread)."""

    def __init__(self, profile_dir: Path, timeout_s: float = 30.0) -> None:
        self.profile_dir = profile_dir
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Browser:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.profile_dir / "chromium.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile_dir}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        port_file = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.profile_dir / "chromium.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium did not open its DevTools port:\n{tail}")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self._loop.run_until_complete(self._connect(f"ws://127.0.0.1:{port}{path}"))
        return self

    async def _connect(self, url: str) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(url, max_msg_size=0)

    def stop(self) -> None:
        async def close() -> None:
            if self._ws is not None:
                await self._ws.close()
            if self._http is not None:
                await self._http.close()

        with contextlib.suppress(Exception):
            self._loop.run_until_complete(close())
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._loop.close()

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- protocol -------------------------------------------------------------------------------------

    async def _call(self, method: str, params: dict[str, Any], session: str) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        while True:
            reply = json.loads(await asyncio.wait_for(self._ws.receive_str(), self.timeout_s))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self._events.append(reply)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> dict[str, Any]:
        return self._loop.run_until_complete(self._call(method, params or {}, session))

    async def _until(self, method: str, session: str) -> None:
        assert self._ws is not None
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(json.loads(await asyncio.wait_for(self._ws.receive_str(), self.timeout_s)))

    def open(self, url: str) -> Page:
        """Loads ``url`` in a new tab and records what it logged and requested until it has loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", {}, session)
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session)
        self._loop.run_until_complete(self._until("Page.loadEventFired", session))
        page = Page(url, _browser=self, _session=session)
        # let the page settle: a round trip after the load event collects late console messages too
        page.evaluate("document.readyState")
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                page.console_errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                page.console_errors.append(str(params["exceptionDetails"].get("text")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                page.console_errors.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
            elif method == "Network.requestWillBeSent":
                page.requests.append(params["request"]["url"])
        return page
