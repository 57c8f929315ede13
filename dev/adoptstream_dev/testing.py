"""What tests, benchmarks and the demo share: ports, worker processes, topics and /metrics samples.

One copy of each helper (in the spirit of bytewax's `testing` module): a real `adoptstream worker`
subprocess on a free loopback port, a topic created and waited for, and the samples of a /metrics page
keyed the way the exactness checks compare them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"

# -- ports ------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port (TIME_WAIT leftovers don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


# -- /metrics samples -------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

CONTRACT_PREFIXES = (
    "adoptstream_events_total",
    "adoptstream_active_users",
    "adoptstream_exposed_users",
    "adoptstream_adopted_users",
    "adoptstream_time_to_first_use_seconds",
    "adoptstream_feature_uses_total",
    "adoptstream_active_days_users",
    "adoptstream_lifecycle_users",
    "adoptstream_signed_up_users",
    "adoptstream_feedback_users",
    "adoptstream_task_duration_seconds",
)


def parse_samples(text: str) -> Samples:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def contract_only(samples: Samples) -> Samples:
    """The contract series (CONTRACT sections 2 and 3), without _created timestamps."""
    return {
        k: v
        for k, v in samples.items()
        if k[0].startswith(CONTRACT_PREFIXES) and not k[0].endswith("_created")
    }


def summed(pages: list[Samples]) -> Samples:
    """`sum without (instance, job)` over workers: add the same series of every worker."""
    total: Samples = defaultdict(float)
    for page in pages:
        for k, v in page.items():
            total[k] += v
    return dict(total)


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def diff_samples(a: Samples, b: Samples, limit: int = 8) -> list[str]:
    """Human-readable differences between two sample sets (missing series count as 0).

    Every series must be equal, except histogram `_sum`s (float seconds): adding them up over workers
    rounds in the last bits, exactly as Prometheus's own `sum` does, so they compare to 1e-12 relative.
    """
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, 0.0), b.get(k, 0.0)
        if va == vb or (k[0].endswith("_sum") and abs(va - vb) <= 1e-12 * max(abs(va), abs(vb))):
            continue
        out.append(f"{k[0]}{dict(k[1])}: {va} != {vb}")
        if len(out) >= limit:
            break
    return out


# -- waiting --------------------------------------------------------------------------------------------

T = TypeVar("T")


def poll_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Call `check` until it returns something true (returned) or `timeout_s` passed (TimeoutError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s} s (last: {result!r})")
        time.sleep(interval_s)


# -- topics -----------------------------------------------------------------------------------------


async def create_topic_async(
    bootstrap: str, topic: str, partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    """Create a topic (if missing) and wait until the broker's metadata has it."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
        # the controller acknowledges before every broker's metadata cache has the topic: poll for it
        deadline = time.monotonic() + 30
        while topic not in set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} not in the broker's metadata after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def create_topic(
    bootstrap: str, topic: str, partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    """`create_topic_async` for synchronous callers."""
    asyncio.run(create_topic_async(bootstrap, topic, partitions, configs))


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset `group` committed there."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def fetch() -> dict[tuple[str, int], int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    return asyncio.run(fetch())


def group_members(bootstrap: str, group: str) -> int:
    """How many members the broker counts in a consumer group now."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        groups = response.to_object()["groups"]
        return sum(len(g["members"]) for g in groups)

    return asyncio.run(describe())


# -- worker processes -------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """One real `adoptstream worker` subprocess: its own data dir, its web endpoints on a loopback port.

    `wrap` prefixes the command line (e.g. a profiler); `python` is the interpreter whose `adoptstream`
    runs (another venv's, say); `new_session` keeps a terminal's Ctrl-C from reaching the worker (the
    demo stops it itself). A worker started with a web config file serving TLS is reached with https
    and `web_ca_file`; `web_auth` (user, password) is the basic auth every request sends.
    """

    bootstrap: str
    topic: str
    data_dir: Path
    app_id: str = "adoptstream"
    store: str = "rocksdb"
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    wrap: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    cwd: Path | None = None
    new_session: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    spawned_at: float = 0.0
    web_ca_file: Path | None = None
    web_auth: tuple[str, str] | None = None

    @property
    def command(self) -> list[str]:
        broker = self.bootstrap if "://" in self.bootstrap else f"kafka://{self.bootstrap}"
        return [
            *self.wrap,
            self.python,
            "-m",
            "adoptstream",
            "worker",
            "--broker",
            broker,
            "--topic",
            self.topic,
            "--web-host",
            HOST,
            "--web-port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--app-id",
            self.app_id,
            "--store",
            self.store,
            *self.extra,
        ]

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"worker-{self.port}.log"
        env = {**os.environ, "ADOPTSTREAM_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **self.env}
        self.spawned_at = time.time()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=self.new_session,
            )
        return self

    @property
    def target(self) -> str:
        """host:port, as a Prometheus scrape target."""
        return f"{HOST}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{'https' if self.web_ca_file else 'http'}://{self.target}{path}"

    @property
    def pid(self) -> int:
        """The worker's own pid (the Python process, also when wrapped by a profiler)."""
        assert self.proc is not None
        if not self.wrap:
            return self.proc.pid
        with contextlib.suppress(OSError):
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if kids:
                return int(kids[0])
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self) -> None:
        assert self.proc is not None, "worker not started"
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """(status, body) of a GET on the worker's web endpoint."""
        request = urllib.request.Request(self.url(path))
        if self.web_auth is not None:
            token = base64.b64encode(":".join(self.web_auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=self.web_ca_file) if self.web_ca_file else None
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def samples(self, query: str = "", timeout: float = 5.0) -> Samples:
        """Every sample of the worker's /metrics (`query`: e.g. `?name[]=...`)."""
        status, text = self.get("/metrics" + query, timeout=timeout)
        if status != 200:
            raise AssertionError(f"/metrics answered {status}: {text[:500]}")
        return parse_samples(text)

    def wait_ready(self, timeout_s: float = 90.0, path: str = "/ready") -> None:
        """Poll /ready (or `path`) until 200; fail early when the worker exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_alive()
            with contextlib.suppress(OSError):
                if self.get(path, timeout=1.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"worker on port {self.port}: {path} not 200 in {timeout_s} s:\n{self.log_tail()}")

    def wait_serving(self, timeout_s: float = 30.0) -> None:
        """Poll /healthz until 200: the web endpoints answer (ready or not)."""
        self.wait_ready(timeout_s, "/healthz")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no goodbye, no commit, no flush."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (SIGINT when wrapped), wait, then SIGKILL; the exit code, None when killed."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGINT if self.wrap else signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None


@contextlib.contextmanager
def stopping(workers: list[WorkerProcess]) -> Iterator[list[WorkerProcess]]:
    """Stops (then kills) every worker in the list on exit, whatever happened."""
    try:
        yield workers
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                w.stop(timeout_s=15)
            with contextlib.suppress(Exception):
                w.kill()


# -- network faults ---------------------------------------------------------------------------------


class TcpProxy:
    """A loopback TCP proxy a test controls: `cut()` the network, `restore()` it.

    While cut, every connection (old or new) is a black hole: what a client sends is read and
    dropped, nothing comes back, as when a cable is pulled (requests time out, heartbeats stop).
    `restore()` then closes the connections of before (they died during the cut) and forwards new ones.
    Kafka clients bootstrap from a broker's advertised listener, so the broker needs a listener that
    advertises this proxy's port (see `LocalKafka`'s `extra_config`).
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"proxy on port {self.port} did not start")
        return self

    def cut(self) -> None:
        self._call(self._set_cut, True)

    def restore(self) -> None:
        self._call(self._set_cut, False)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close_all)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, func: Callable[..., object], *args: object) -> None:
        async def run() -> None:
            func(*args)

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._accept, HOST, self.port)
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()
        self._loop.close()

    def _set_cut(self, cut: bool) -> None:
        if not cut:  # the connections of before died during the cut
            self._close_all()
        self._cut = cut

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self._cut:
            await self._drain_into_nothing(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self._cut:
                    continue  # dropped: a black hole
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _drain_into_nothing(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass
