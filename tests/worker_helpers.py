"""Run the streams worker as a child process against the real broker, and watch its output."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from schemas import Message
from streams.status import read_table, worker_status
from streams.topology import Topology
from streamtune.core.clients import make_admin, make_producer
from streamtune.core.settings import Settings
from tests.conftest import REPO, _delete_topics
from tests.kafka_helpers import read_all

#: Settings that keep integration runs short; tests override what they exercise.
FAST = {
    "worker_commit_interval_s": 0.5,
    "worker_tick_interval_s": 0.5,
    "worker_session_timeout_s": 6,
    "join_prediction_wait_s": 0.5,
}


def worker_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The environment that gives a child process ``settings`` plus ``overrides``."""
    values = {
        "bootstrap_servers": settings.bootstrap_servers,
        "topic_prefix": settings.topic_prefix,
        "worker_metrics_port": 0,  # many workers run at once; a test that reads it gives one
        **FAST,
        **overrides,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTUNE_")}
    env.update({f"STREAMTUNE_{k.upper()}": str(v) for k, v in values.items() if v is not None})
    return env


class WorkerProcess:
    """``streamtune worker`` (or any command) in a child process with its own log file."""

    def __init__(self, env: dict[str, str], log: Path, command: list[str] | None = None) -> None:
        self.env = env
        self.log = log
        self.command = command or [sys.executable, "-m", "streamtune.cli", "worker"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.command, env=self.env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        return self

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, no commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


async def wait_for(
    check: Callable[[], Awaitable[Any]],
    timeout_s: float,
    what: str,
    worker: WorkerProcess | None = None,
    interval_s: float = 0.3,
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the worker's log if not."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if worker is not None and not worker.alive():
            raise AssertionError(f"the worker died while waiting for {what}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            log = worker.tail() if worker is not None else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{log}")
        await asyncio.sleep(interval_s)


async def wait_ready(settings: Settings, worker: WorkerProcess, timeout_s: float = 60) -> None:
    """The worker owns every join partition: each has written its progress record."""
    changelog = Topology(settings, app=None).changelog("join")

    async def ready() -> bool:
        if not await topic_exists(settings, changelog):
            return False
        table = await read_table(settings, changelog)
        return all(f"~progress:{p}" in table for p in range(settings.stream_partitions))

    await wait_for(ready, timeout_s, "the worker to own its partitions", worker, interval_s=0.5)


async def topic_exists(settings: Settings, topic: str) -> bool:
    admin = make_admin(settings)
    await admin.start()
    try:
        return topic in await admin.list_topics()
    finally:
        await admin.close()


async def publish(settings: Settings, records: list[tuple[str, str, Message | bytes]]) -> None:
    """Send ``(topic, key, message or raw bytes)`` in order, and wait for the acks."""
    producer = make_producer(settings)
    await producer.start()
    try:
        pending = []
        for topic, key, value in records:
            raw = value if isinstance(value, bytes) else value.to_bytes()
            pending.append(await producer.send(settings.topic(topic), raw, key=key.encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def decoded(settings: Settings, topic: str, model: type[Message]) -> list[Any]:
    return [model.from_bytes(r.value) for r in await read_all(settings, settings.topic(topic))]


async def task_state(settings: Settings, task: str) -> Any:
    return (await worker_status(settings))["tasks"].get(task)


#: Every topic of the test, the worker's own and Faust's included (best effort).
delete_prefixed_topics = _delete_topics
