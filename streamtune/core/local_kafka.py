"""A local Apache Kafka (KRaft broker+controller nodes) for development, CI, the demo and
fault tests: one node by default, or a cluster of ``kafka_nodes`` on loopback.

The broker jars are resolved from Maven Central by ``ops/kafka/pom.xml`` into
``<cache_dir>/kafka-<version>/libs`` once, then reused. The node's storage, its
``server.properties``, pid file and logs live in the data directory.

Typical use::

    broker = LocalKafka(Settings())
    broker.start()          # formats storage on first use; harmless when already running
    broker.status()
    broker.stop()

    cluster = LocalCluster(Settings(kafka_nodes=3, kafka_port=29092, kafka_controller_port=29192,
                                    kafka_data_dir=Path("/tmp/st-cluster")))
    cluster.start()         # three nodes, each a broker and a controller voter
    cluster.nodes[1].kill() # kill -9 one of them; cluster.nodes[1].start() brings it back
    cluster.stop()

Node ``i`` of a cluster listens on ``kafka_port + i`` (clients) and ``kafka_controller_port + i``
(the KRaft quorum) and keeps its storage in ``<kafka_data_dir>/node-i``. A cluster of three or
more nodes replicates its internal topics three times with ``min.insync.replicas`` 2, and so
do topics created without explicit settings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamtune.core.errors import BrokerError
from streamtune.core.logging_setup import quiet_aiokafka
from streamtune.core.settings import Settings

log = logging.getLogger(__name__)

OPS_KAFKA_DIR = Path(__file__).resolve().parents[2] / "ops" / "kafka"
_MAIN_CLASS = "kafka.Kafka"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    answering: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    version: str

    def describe(self) -> str:
        if not self.running:
            return f"stopped (data dir {self.data_dir})"
        state = "answering" if self.answering else "running but not answering metadata requests"
        return f"Kafka {self.version} pid {self.pid} {state} at {self.bootstrap} (data dir {self.data_dir})"


@dataclass(frozen=True)
class StartResult:
    pid: int
    already_running: bool
    seconds: float
    bootstrap: str


class LocalKafka:
    """Start, stop and inspect one local KRaft node: node ``node`` of ``settings.kafka_nodes``."""

    def __init__(self, settings: Settings, node: int = 0) -> None:
        if not 0 <= node < settings.kafka_nodes:
            raise BrokerError(f"node {node} is not one of the {settings.kafka_nodes} nodes")
        self.settings = settings
        self.node = node
        self.port = settings.kafka_port + node
        self.controller_port = settings.kafka_controller_port + node
        clustered = settings.kafka_nodes > 1
        self.data_dir = (
            settings.broker_data_dir / f"node-{node}" if clustered else settings.broker_data_dir
        )
        self.bootstrap = f"{settings.kafka_host}:{self.port}"

    # --- paths ----------------------------------------------------------------------
    @property
    def libs_dir(self) -> Path:
        return self.settings.cache_dir / f"kafka-{self.settings.kafka_version}" / "libs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "kraft"

    # --- jars -----------------------------------------------------------------------
    def resolve(self) -> Path:
        """Resolve the broker jars from Maven Central into the cache (once)."""
        marker = self.libs_dir / ".complete"
        if marker.exists():
            return self.libs_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is needed once to resolve the Kafka jars; install it")
        pom = OPS_KAFKA_DIR / "pom.xml"
        if not pom.exists():
            raise BrokerError(f"{pom} is missing; run streamtune from a checkout of the repository")
        self.libs_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.libs_dir.parent / ".resolve.lock"):
            if marker.exists():
                return self.libs_dir
            log.info("resolving Apache Kafka %s from Maven Central", self.settings.kafka_version)
            cmd = [
                mvn, "-q", "-B", "-f", str(pom),
                f"-Dkafka.version={self.settings.kafka_version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={self.libs_dir}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
            if proc.returncode != 0:
                raise BrokerError(
                    f"Maven could not resolve Kafka {self.settings.kafka_version}:\n"
                    f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
                )
            if not any(self.libs_dir.glob("kafka_2.13-*.jar")):
                raise BrokerError(f"Maven finished but no kafka_2.13 jar is in {self.libs_dir}")
            marker.write_text(self.settings.kafka_version)
        return self.libs_dir

    # --- lifecycle ----------------------------------------------------------------------
    def start(self, timeout_s: float | None = None) -> StartResult:
        """Start the node and wait until it answers a metadata request. Idempotent.

        A node of a cluster answers only while a majority of the controllers runs: start a
        whole cluster with :meth:`LocalCluster.start`, restart one node with this."""
        began = time.monotonic()
        timeout = timeout_s or self.settings.kafka_start_timeout_s
        pid, already = self.launch()
        self._wait_answering(pid, timeout, began)
        return StartResult(pid, already, time.monotonic() - began, self.bootstrap)

    def launch(self) -> tuple[int, bool]:
        """Spawn the node unless it runs; ``(pid, already_running)``. Does not wait for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.data_dir / ".lock"):
            pid = self._live_pid()
            if pid is not None:
                return pid, True
            for port in (self.port, self.controller_port):
                if _port_in_use(self.settings.kafka_host, port, wait_s=5.0):
                    raise BrokerError(
                        f"port {port} on {self.settings.kafka_host} is in use by another process; "
                        "stop it or set STREAMTUNE_KAFKA_PORT / STREAMTUNE_KAFKA_CONTROLLER_PORT"
                    )
            libs = self.resolve()
            props = self._write_properties()
            self._format_storage(libs, props)
            return self._spawn(libs, props), False

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop the node cleanly (SIGTERM, then SIGKILL after ``timeout_s``). False if not running."""
        pid = self._live_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, timeout_s):
            log.warning("broker pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """Kill the node with SIGKILL, as a crash would. For fault tests."""
        pid = self._live_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        pid = self._live_pid()
        answering = pid is not None and asyncio.run(_answers_metadata(self.bootstrap, 5.0))
        return BrokerStatus(
            running=pid is not None,
            answering=answering,
            pid=pid,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            version=self.settings.kafka_version,
        )

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_dir / "server.log"
        stdout = self.log_dir / "stdout.log"
        chunks = []
        for p in (path, stdout):
            if p.exists():
                chunks.append(
                    f"--- {p} ---\n"
                    + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                )
        return "\n".join(chunks)

    # --- internals ---------------------------------------------------------------------
    def _write_properties(self) -> Path:
        s = self.settings
        voters = ",".join(
            f"{i + 1}@{s.kafka_host}:{s.kafka_controller_port + i}" for i in range(s.kafka_nodes)
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node + 1),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{s.kafka_host}:{self.port},CONTROLLER://{s.kafka_host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.kafka_host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.storage_dir),
            "num.partitions": "3",
            # Topics are created explicitly from schemas.topics, so a typo fails loudly.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A single local node: no reason to delay the first rebalance.
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(5 * 1024 * 1024),
            "log.cleaner.backoff.ms": "1000",
            **self._replication_properties(),
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _replication_properties(self) -> dict[str, str]:
        """A cluster keeps three copies of its internal topics, and of topics created without
        settings of their own, and needs two of them in sync to accept a write."""
        nodes = self.settings.kafka_nodes
        if nodes == 1:
            return {}
        copies, in_sync = str(min(3, nodes)), str(min(2, nodes))
        return {
            "default.replication.factor": copies,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": copies,
            "transaction.state.log.replication.factor": copies,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": copies,
            "share.coordinator.state.topic.min.isr": in_sync,
            # A killed node's partitions move on quickly; a clean restart rejoins the ISR.
            "replica.lag.time.max.ms": "10000",
            "controller.quorum.election.timeout.ms": "1000",
            "controller.quorum.fetch.timeout.ms": "2000",
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
        }

    def _cluster_id(self) -> str:
        """One id for every node of a cluster (written once beside the nodes' folders)."""
        # An id that starts with "-" reads as an option to the format tool; Kafka's own
        # generator avoids those too.
        fresh = "-"
        while fresh.startswith("-"):
            fresh = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if self.settings.kafka_nodes == 1:
            return fresh
        path = self.settings.broker_data_dir / "cluster.id"
        with _locked(self.settings.broker_data_dir / ".cluster.lock"):
            if not path.exists():
                path.write_text(fresh)
            return path.read_text().strip()

    def _format_storage(self, libs: Path, props: Path) -> None:
        if (self.storage_dir / "meta.properties").exists():
            return
        cluster_id = self._cluster_id()
        cmd = [
            _java(), "-Xmx256m", "-cp", f"{libs}/*",
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            "-t", cluster_id, "-c", str(props),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{proc.stdout}{proc.stderr}")

    def _spawn(self, libs: Path, props: Path) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        heap = self.settings.kafka_heap
        cmd = [
            _java(), f"-Xmx{heap}", f"-Xms{heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={OPS_KAFKA_DIR / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp", f"{libs}/*", _MAIN_CLASS, str(props),
        ]  # fmt: skip
        stdout = (self.log_dir / "stdout.log").open("ab")
        # A new session: the broker outlives the CLI that started it and ignores its Ctrl-C.
        proc = subprocess.Popen(  # noqa: S603
            cmd,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        stdout.close()
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def _wait_answering(self, pid: int, timeout: float, began: float) -> None:
        while time.monotonic() - began < timeout:
            if not _pid_alive(pid):
                raise BrokerError(
                    f"the broker (pid {pid}) exited during start-up:\n{self.log_tail()}"
                )
            if asyncio.run(_answers_metadata(self.bootstrap, 2.0)):
                return
            time.sleep(0.25)
        raise BrokerError(f"the broker did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def _live_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        # Guard against pid reuse: it must be our broker with our config.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid  # no /proc (macOS): trust the pid file
        if (
            _MAIN_CLASS.encode() in cmdline
            and str(self.data_dir / "server.properties").encode() in cmdline
        ):
            return pid
        return None


async def _answers_metadata(bootstrap: str, timeout_s: float) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    with quiet_aiokafka():  # "connection refused" is the expected answer while starting
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            metadata = await asyncio.wait_for(client.fetch_all_metadata(), timeout_s)
            return bool(metadata.brokers())
        except Exception:  # any failure means "not yet"
            return False
        finally:
            with contextlib.suppress(Exception):
                await client.close()


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError("Java 17 or newer is needed to run the local Kafka broker; install a JRE")
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (we started it in this process) is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        if not _pid_alive(pid):
            return True
        time.sleep(0.1)
    return not _pid_alive(pid)


def _port_in_use(host: str, port: int, wait_s: float = 0.0) -> bool:
    """True when something still listens on the port after ``wait_s`` (a process that was
    just killed can hold it for a moment). A bind test would also trip over the half-closed
    connections a stopped broker leaves behind, which do not stop a restart."""
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) != 0:
                return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LocalCluster:
    """The ``settings.kafka_nodes`` local nodes, started, stopped and inspected together.

    With one node it behaves exactly as :class:`LocalKafka` does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes = [LocalKafka(settings, node) for node in range(settings.kafka_nodes)]
        self.bootstrap = ",".join(node.bootstrap for node in self.nodes)

    def start(self, timeout_s: float | None = None) -> list[StartResult]:
        """Spawn every node, then wait until each answers (a quorum needs a majority up)."""
        began = time.monotonic()
        timeout = timeout_s or self.settings.kafka_start_timeout_s
        launched = [node.launch() for node in self.nodes]
        results = []
        for node, (pid, already) in zip(self.nodes, launched, strict=True):
            node._wait_answering(pid, timeout, began)
            results.append(StartResult(pid, already, time.monotonic() - began, node.bootstrap))
        return results

    def stop(self, timeout_s: float = 60.0) -> int:
        """Stop every node at once (one by one, the last would wait for a lost quorum);
        how many were running."""
        running = [(node, pid) for node in self.nodes if (pid := node._live_pid()) is not None]
        for _, pid in running:
            os.kill(pid, signal.SIGTERM)
        for node, pid in running:
            if not _wait_exit(pid, timeout_s):
                log.warning("node %d (pid %d) ignored SIGTERM; killing it", node.node, pid)
                os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, 10.0)
            node.pid_file.unlink(missing_ok=True)
        for node in self.nodes:
            if node._live_pid() is None:
                node.pid_file.unlink(missing_ok=True)
        return len(running)

    def status(self) -> list[BrokerStatus]:
        return [node.status() for node in self.nodes]
