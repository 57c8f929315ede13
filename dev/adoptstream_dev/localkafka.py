"""A real single-node Apache Kafka (KRaft) on 127.0.0.1, fetched from Maven Central: no Docker.

`fetch_kafka_libs()` runs mvn on kafka/pom.xml (next to this module) once and caches the jars;
`LocalKafka` formats a data dir, runs the broker as a detached JVM and waits until it answers Kafka
metadata requests. The `kafka up|down|status` subcommands drive it for `make kafka-up` / `make kafka-down`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from adoptstream_dev.testing import free_port, port_in_use

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
NODE_ID = 1
# the pom that pins Kafka's version and the broker's log4j2 configuration ship with this package
KAFKA_FILES = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_FILES / "pom.xml"
LOG4J2_CONFIG = KAFKA_FILES / "log4j2.xml"
MARKER = ".fetched"
CDS_ARCHIVE = ".broker.jsa"  # AppCDS archive next to the jars: roughly halves JVM start time
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx768m"
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)
# Small and quick for a laptop or CI: few internal partitions, no rebalance delay, topics made explicitly.
DEFAULT_CONFIG: dict[str, str] = {
    # Producers that publish before any worker created the topic still get an 8-partition topic.
    "num.partitions": "8",
    "auto.create.topics.enable": "true",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "4",
}
PROBE_INTERVAL_S = 0.2


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


# ---------------------------------------------------------------- fetching the jars


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version pinned in the pom (`<kafka.version>`)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise LocalKafkaError(f"no <kafka.version> property in {pom}")
    return (node.text or "").strip()


def default_libs_dir(version: str | None = None) -> Path:
    """~/.cache/adoptstream/kafka-<version>/libs (honours XDG_CACHE_HOME)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adoptstream"
    return root / f"kafka-{version or kafka_version()}" / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def kafka_libs_cached(cache_dir: Path | None = None) -> bool:
    """True when the jars for the current pom are already in the cache."""
    marker = (cache_dir or default_libs_dir()) / MARKER
    return marker.is_file() and marker.read_text().strip() == _pom_digest()


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise LocalKafkaError(f"`{tool}` not found on PATH: {hint}")
    return path


def _run_mvn(out_dir: Path) -> None:
    mvn = _require("mvn", "install Maven 3 (Debian/Ubuntu: apt-get install maven)")
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={out_dir}"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"mvn did not finish in {exc.timeout:.0f} s: {' '.join(cmd)}") from exc
    if res.returncode != 0 or not any(out_dir.glob("kafka_*.jar")):
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-30:])
        raise LocalKafkaError(f"mvn failed (exit {res.returncode}): {' '.join(cmd)}\n{tail}")


def fetch_kafka_libs(cache_dir: Path | None = None, *, progress: Callable[[str], None] | None = None) -> Path:
    """Return a directory holding the broker's jars, running mvn only when the cache is missing or stale."""
    _require("java", "install a JRE 17+ (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)")
    libs = Path(cache_dir) if cache_dir else default_libs_dir()
    if kafka_libs_cached(libs):
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same thing right now
        if kafka_libs_cached(libs):
            return libs
        if progress:
            progress(
                f"Fetching Apache Kafka {kafka_version()} jars from Maven Central with mvn "
                f"(first run only, ~55 MB) into {libs} ..."
            )
        tmp = libs.with_name(f"{libs.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _run_mvn(tmp)
            (tmp / MARKER).write_text(_pom_digest() + "\n")
            shutil.rmtree(libs, ignore_errors=True)
            tmp.rename(libs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return libs


# ---------------------------------------------------------------- small helpers


def random_cluster_id() -> str:
    """A Kafka cluster id (what `kafka-storage random-uuid` prints), without starting a JVM."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _first_errors(path: Path, count: int = 3) -> str:
    """The first ERROR lines of a log4j file, each with the line after it (usually the exception)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    hits = [i for i, line in enumerate(lines) if "] ERROR " in line][:count]
    return "\n".join("\n".join(lines[i : i + 2]) for i in hits)


def _process_state(pid: int) -> str | None:
    """Linux process state letter from /proc (e.g. R, S, Z), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that already exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_state(pid) != "Z"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")


async def _probe_metadata(bootstrap: str, timeout_ms: int) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return any(b.nodeId == NODE_ID for b in metadata.brokers())
    finally:
        await client.close()


def broker_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when a Kafka broker at `bootstrap` answers a metadata request listing itself (unfenced)."""
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # a broker still starting up is not an error worth logging
    try:
        # own thread, own event loop: works from sync code and from inside a running loop alike
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            probe = asyncio.wait_for(_probe_metadata(bootstrap, int(timeout_s * 1000)), timeout_s + 2)
            future = pool.submit(asyncio.run, probe)
            return future.result(timeout=timeout_s + 5)
    except Exception:
        return False
    finally:
        aiokafka_log.setLevel(level)


# ---------------------------------------------------------------- the broker


@dataclass(frozen=True)
class Listener:
    """An extra listener of the local broker on 127.0.0.1, next to its PLAINTEXT one.

    A TLS listener (SSL, SASL_SSL) serves `keystore` (PEM: private key + certificate chain) or else the
    broker's; `client_auth="required"` makes it mutual TLS (clients need a certificate the broker's
    truststore trusts). A SASL listener accepts PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for the broker's
    `sasl_users`.
    """

    name: str  # as in server.properties: upper-case letters, digits and '_'
    protocol: Literal["SSL", "SASL_SSL", "SASL_PLAINTEXT"]
    port: int = field(default_factory=free_port)
    client_auth: Literal["none", "requested", "required"] = "none"
    keystore: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1, its state in `data_dir`.

    Files: server.properties, data/ (log.dirs), broker.log (log4j), broker.out (JVM stdout/stderr),
    broker.pid while running, localkafka.json (ports, so `kafka down --dir` needs nothing else).
    """

    def __init__(
        self,
        port: int,
        data_dir: Path,
        controller_port: int | None = None,
        *,
        extra_config: dict[str, str] | None = None,
        die_with_parent: bool = False,
        listeners: Sequence[Listener] = (),
        keystore: Path | None = None,
        truststore: Path | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        """`die_with_parent`: SIGTERM the broker when the thread that started it dies (tests: no leaks).

        `listeners`: extra TLS/SASL listeners; `keystore` (PEM key + chain) is what their TLS serves,
        `truststore` (PEM CA certificates) what client certificates must chain to; `sasl_users` (name ->
        password) may log in with each of SASL_MECHANISMS (the SCRAM credentials are stored when the
        data dir is formatted, with Kafka's own StorageTool).
        """
        self.port = int(port)
        self.data_dir = Path(data_dir).resolve()
        self._controller_port = controller_port
        self.extra_config = dict(extra_config or {})
        self.die_with_parent = die_with_parent
        self.listeners = tuple(listeners)
        self.keystore = keystore
        self.truststore = truststore
        self.sasl_users = dict(sasl_users or {})
        for listener in self.listeners:
            if listener.tls and (listener.keystore or keystore) is None:
                raise LocalKafkaError(f"listener {listener.name} ({listener.protocol}) needs a keystore")
            if listener.client_auth != "none" and truststore is None:
                raise LocalKafkaError(f"listener {listener.name} asks for client certificates: no truststore")
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", listener.name) or listener.name in (
                "PLAINTEXT",
                "CONTROLLER",
            ):
                raise LocalKafkaError(
                    f"listener name {listener.name!r}: upper case, not PLAINTEXT/CONTROLLER"
                )
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_dir(cls, data_dir: Path) -> LocalKafka:
        """The broker described by `data_dir/localkafka.json` (written by `start`)."""
        state = _read_state(Path(data_dir))
        if not state:
            raise LocalKafkaError(f"no local Kafka in {data_dir} (missing {STATE_FILE})")
        return cls(int(state["port"]), Path(data_dir), int(state["controller_port"]))

    # ---- paths and addresses

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT`, for bootstrap.servers."""
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def out_path(self) -> Path:
        return self.data_dir / "broker.out"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def controller_port(self) -> int:
        """Explicit, else the one used last time in this dir, else port+1 when free, else any free one."""
        if self._controller_port is None:
            stored = _read_state(self.data_dir).get("controller_port")
            candidates = [stored] if stored and stored != self.port else []
            candidates.append(self.port + 1)
            chosen = next((p for p in candidates if p < 65536 and not port_in_use(p)), None)
            self._controller_port = chosen or _free_port_other_than(self.port)
        return self._controller_port

    # ---- lifecycle

    def start(self, timeout_s: float = 90) -> bool:
        """Start the broker and wait until it answers; False (and no-op) if it already runs from this dir."""
        deadline = time.monotonic() + timeout_s
        if self.is_running():
            self._check_running_port()
            log.info("Kafka already running from %s (pid %s)", self.data_dir, self.pid())
            self._wait_ready(deadline)
            return False
        libs = fetch_kafka_libs(progress=lambda msg: log.warning("%s", msg))
        self._check_ports_free()
        self._prepare(libs)
        self._launch(libs)
        self._wait_ready(deadline, stop_on_timeout=True)
        return True

    def stop(self, timeout_s: float = 30) -> bool:
        """SIGTERM the broker, wait, SIGKILL if needed; False if it was not running."""
        pid = self.pid()
        if pid is None or not self._alive(pid) or not self._is_our_broker(pid):
            self.pid_path.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        graceful = self._wait_exit(pid, timeout_s)
        if not graceful:
            log.warning("Kafka (pid %s) ignored SIGTERM for %.0f s: SIGKILL", pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10):
                raise LocalKafkaError(f"Kafka pid {pid} survived SIGKILL")
        self._proc = None
        self.pid_path.unlink(missing_ok=True)
        self._promote_cds_archive(graceful)
        return True

    def is_running(self) -> bool:
        """True when the pid file names a live broker JVM started from this dir."""
        pid = self.pid()
        return pid is not None and self._alive(pid) and self._is_our_broker(pid)

    def pid(self) -> int | None:
        """The pid in broker.pid, if any (alive or not)."""
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

    # ---- internals

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _pid_alive(pid)

    def _is_our_broker(self, pid: int) -> bool:
        """Guards against a recycled pid: the process must be kafka.Kafka on our server.properties."""
        args = _cmdline(pid)
        return args is None or ("kafka.Kafka" in args and str(self.properties_path) in args)

    def _check_running_port(self) -> None:
        running = _read_state(self.data_dir).get("port")
        if running and int(running) != self.port:
            raise LocalKafkaError(
                f"a broker from {self.data_dir} is already running on {HOST}:{running}, not :{self.port}; "
                f"stop it first (adoptstream-dev kafka down --dir {self.data_dir})"
            )

    def listener(self, name: str) -> Listener:
        """The extra listener called `name`."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)

    def _check_ports_free(self) -> None:
        ports = [("Kafka listener", self.port), ("KRaft controller", self.controller_port)]
        ports += [(f"{listener.name} listener", listener.port) for listener in self.listeners]
        for role, port in ports:
            if port_in_use(port):
                raise LocalKafkaError(
                    f"port {port} on {HOST} ({role}) is already in use by another process "
                    f"(see: ss -ltnp 'sport = :{port}'); pick another port"
                )

    def _config(self) -> dict[str, str]:
        cport = self.controller_port
        extra = [f"{listener.name}://{HOST}:{listener.port}" for listener in self.listeners]
        config = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{HOST}:{cport}",
            "listeners": ",".join(
                [f"PLAINTEXT://{HOST}:{self.port}", f"CONTROLLER://{HOST}:{cport}", *extra]
            ),
            "advertised.listeners": ",".join([f"PLAINTEXT://{HOST}:{self.port}", *extra]),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(
                ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
                + [f"{listener.name}:{listener.protocol}" for listener in self.listeners]
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            **DEFAULT_CONFIG,
        }
        for listener in self.listeners:
            config.update(self._listener_config(listener))
        config.update(self.extra_config)
        return config

    def _listener_config(self, listener: Listener) -> dict[str, str]:
        """The listener.name.<name>.* settings of one extra listener: its TLS material, its SASL logins."""
        prefix = f"listener.name.{listener.name.lower()}."
        config: dict[str, str] = {}
        if listener.tls:
            config[prefix + "ssl.keystore.type"] = "PEM"
            config[prefix + "ssl.keystore.location"] = str(listener.keystore or self.keystore)
            config[prefix + "ssl.client.auth"] = listener.client_auth
            if self.truststore is not None:
                config[prefix + "ssl.truststore.type"] = "PEM"
                config[prefix + "ssl.truststore.location"] = str(self.truststore)
        if listener.sasl:
            config[prefix + "sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            config[prefix + "plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
            for mechanism in SASL_MECHANISMS[1:]:
                config[prefix + f"{mechanism.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        return config

    def _prepare(self, libs: Path) -> None:
        """Write server.properties and the state file; format the storage the first time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={_properties_text(v)}" for k, v in self._config().items()]
        self.properties_path.write_text("# written by adoptstream_dev.localkafka\n" + "\n".join(lines) + "\n")
        state = {"port": self.port, "controller_port": self.controller_port, "libs": str(libs)}
        _write_state(self.data_dir, state)
        if not (self.log_dirs / "meta.properties").exists():
            self._format(libs)

    def _format(self, libs: Path) -> None:
        cmd = [
            *self._java(libs, *_cds_use_flags(libs)),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            random_cluster_id(),
            "-c",
            str(self.properties_path),
        ]
        for name, password in self.sasl_users.items():  # SCRAM credentials live in the cluster metadata
            for mechanism in SASL_MECHANISMS[1:]:
                cmd += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"formatting {self.log_dirs} timed out") from exc
        if res.returncode != 0:
            output = "\n".join((res.stdout + res.stderr).splitlines()[:12])
            raise LocalKafkaError(f"formatting {self.log_dirs} failed (exit {res.returncode}):\n{output}")

    def _java(self, libs: Path, *jvm_flags: str) -> list[str]:
        """java + flags + log4j2 config (logs into data_dir) + classpath; the main class comes next."""
        return [
            _require("java", "install a JRE 17+"),
            *jvm_flags,
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{libs}/*",
        ]

    def _launch(self, libs: Path) -> None:
        heap = os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS).split()
        flags = [*heap, *JVM_FLAGS, *self._cds_flags(libs)]
        cmd = [*self._java(libs, *flags), "kafka.Kafka", str(self.properties_path)]
        setpriv = shutil.which("setpriv") if self.die_with_parent else None
        if setpriv:  # util-linux; it execs java, so the pid stays the JVM's
            cmd = [setpriv, "--pdeathsig", "TERM", *cmd]
        with open(self.out_path, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: Ctrl-C in the terminal or a dying parent leaves it be
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        log.info("Kafka starting from %s (pid %s)", self.data_dir, self._proc.pid)

    def _wait_ready(self, deadline: float, stop_on_timeout: bool = False) -> None:
        pid = self.pid()
        while True:
            if pid is None or not self._alive(pid):
                self.pid_path.unlink(missing_ok=True)
                raise LocalKafkaError(f"Kafka exited during startup.\n{self._diagnostics()}")
            if broker_answers(self.bootstrap, timeout_s=min(3.0, max(0.5, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                diagnostics = self._diagnostics()
                if stop_on_timeout:  # ours and half-started: don't leave it behind
                    self.stop(timeout_s=10)
                raise LocalKafkaError(f"Kafka did not answer at {self.bootstrap} in time.\n{diagnostics}")
            time.sleep(PROBE_INTERVAL_S)

    def _diagnostics(self) -> str:
        return (
            f"--- first errors in {self.log_path}:\n{_first_errors(self.log_path)}\n"
            f"--- tail of {self.log_path}:\n{_tail(self.log_path, 25)}\n"
            f"--- tail of {self.out_path}:\n{_tail(self.out_path, 10)}"
        )

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # ---- AppCDS: the first run dumps the classes it loaded, later runs map them instead of loading jars

    @property
    def _cds_pending(self) -> Path:
        return self.data_dir / "cds.jsa.tmp"

    def _cds_flags(self, libs: Path) -> list[str]:
        if not _cds_enabled() or (libs / CDS_ARCHIVE).is_file():
            return _cds_use_flags(libs)
        self._cds_pending.unlink(missing_ok=True)
        return [f"-XX:ArchiveClassesAtExit={self._cds_pending}"]

    def _promote_cds_archive(self, graceful: bool) -> None:
        pending = self._cds_pending
        if not pending.is_file():
            return
        try:
            archive = Path(_read_state(self.data_dir).get("libs") or default_libs_dir()) / CDS_ARCHIVE
            if graceful and pending.stat().st_size > 0 and not archive.exists():
                tmp = archive.with_name(f"{archive.name}.{os.getpid()}.tmp")
                shutil.copyfile(pending, tmp)
                tmp.replace(archive)
        except (OSError, LocalKafkaError) as exc:
            log.debug("no CDS archive: %s", exc)
        finally:
            pending.unlink(missing_ok=True)


STATE_FILE = "localkafka.json"


def _properties_text(value: str) -> str:
    """A value as Java reads a .properties file (ISO-8859-1): anything else as \\uXXXX escapes."""
    if value.isascii():
        return value
    units = value.encode("utf-16-be")
    return "".join(
        chr(unit) if unit < 128 else f"\\u{unit:04x}"
        for unit in (int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2))
    )


def _cds_enabled() -> bool:
    return os.environ.get("ADOPTSTREAM_KAFKA_CDS", "1") != "0"


def _cds_use_flags(libs: Path) -> list[str]:
    """Map the AppCDS archive when there is one (a stale one is ignored by the JVM: -Xshare:auto)."""
    archive = libs / CDS_ARCHIVE
    if _cds_enabled() and archive.is_file():
        return ["-Xshare:auto", f"-XX:SharedArchiveFile={archive}"]
    return []


def _read_state(data_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    (data_dir / STATE_FILE).write_text(json.dumps(state) + "\n")


def _free_port_other_than(port: int) -> int:
    while (candidate := free_port()) == port:
        pass
    return candidate


# ---------------------------------------------------------------- CLI: adoptstream-dev kafka up|down|status


def _default_port() -> int:
    return int(os.environ.get("KAFKA_PORT") or 9092)


def _default_dir() -> Path:
    return Path(os.environ.get("KAFKA_DIR") or ".run/kafka")


def _parse_config(items: list[str]) -> dict[str, str]:
    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[\w.\-]+", key):
            raise LocalKafkaError(f"--config wants KEY=VALUE, got {item!r}")
        config[key] = value
    return config


def _cmd_up(args: argparse.Namespace) -> int:
    broker = LocalKafka(args.port, args.dir, args.controller_port, extra_config=_parse_config(args.config))
    if not kafka_libs_cached():
        fetch_kafka_libs(progress=lambda msg: print(msg, flush=True))
    t0 = time.monotonic()
    if broker.is_running():
        print(f"Kafka already running from {broker.data_dir} (pid {broker.pid()})", flush=True)
    else:
        print(f"Starting Kafka {kafka_version()} (KRaft, single node) from {broker.data_dir} ...", flush=True)
    started = broker.start(timeout_s=args.timeout)
    took = f", ready in {time.monotonic() - t0:.1f} s" if started else ""
    print(f"Kafka ready at {broker.bootstrap} (pid {broker.pid()}{took})")
    print(f"  log:  {broker.log_path}")
    print(f"  stop: adoptstream-dev kafka down --dir {args.dir}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    try:
        broker = LocalKafka.from_dir(args.dir)
    except LocalKafkaError:
        print(f"No local Kafka in {args.dir}: nothing to stop")
        return 0
    pid = broker.pid()
    if broker.stop(timeout_s=args.timeout):
        print(f"Kafka stopped (pid {pid}, was at {broker.bootstrap})")
    else:
        print(f"Kafka from {broker.data_dir} was not running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        broker = LocalKafka.from_dir(args.dir)
    except LocalKafkaError:
        print(f"No local Kafka in {args.dir}")
        return 3
    if not broker.is_running():
        print(f"Kafka from {broker.data_dir} is not running (last at {broker.bootstrap})")
        return 3
    answers = "answering" if broker_answers(broker.bootstrap) else "NOT answering yet"
    print(f"Kafka running at {broker.bootstrap} (pid {broker.pid()}, {answers}); log: {broker.log_path}")
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except LocalKafkaError as exc:
            print(f"adoptstream-dev kafka: error: {exc}", file=sys.stderr)
            return 1

    return run


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `kafka up|down|status`."""
    kafka = subparsers.add_parser("kafka", help="local Apache Kafka broker (KRaft, 127.0.0.1, no Docker)")
    sub = kafka.add_subparsers(dest="kafka_command", metavar="ACTION", required=True)

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--dir",
            type=Path,
            default=_default_dir(),
            help="broker state, data and logs (env KAFKA_DIR, default .run/kafka)",
        )
        return p

    up = with_dir(sub.add_parser("up", help="start the broker (no-op if running); returns when ready"))
    up.add_argument("--port", type=int, default=_default_port(), help="listener port (env KAFKA_PORT, 9092)")
    up.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="KRaft controller port (default: last used in --dir, else port+1 if free, else any)",
    )
    up.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra server.properties setting (repeatable)",
    )
    up.add_argument("--timeout", type=float, default=90, help="seconds to wait for readiness (90)")
    up.set_defaults(func=_guarded(_cmd_up))

    down = with_dir(sub.add_parser("down", help="stop the broker started from --dir"))
    down.add_argument("--timeout", type=float, default=30, help="seconds before SIGKILL (30)")
    down.set_defaults(func=_guarded(_cmd_down))

    status = with_dir(sub.add_parser("status", help="is the broker from --dir running? (exit 3 if not)"))
    status.set_defaults(func=_guarded(_cmd_status))
