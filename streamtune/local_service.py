"""Run the whole service locally: worker, serve and train as child processes.

Used by ``streamtune demo``, ``streamtune bench adapt`` and the end-to-end test. Each child
gets exactly this process's settings through ``STREAMTUNE_*`` variables and logs to its own
file; ``stop()`` sends SIGTERM (graceful) and waits.

    with LocalService(settings, log_dir) as service:   # starts, waits until all three are ready
        ...
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pydantic import SecretStr

from streamtune.core.errors import StreamtuneError
from streamtune.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ROLES = ("worker", "serve", "train")
#: Settings that hold or locate the trainer's private key; only the roles in SIGNERS get them.
SIGNING_SETTINGS = frozenset({"signing_key", "signing_key_file"})
SIGNERS = frozenset({"train"})


def settings_env(settings: Settings, role: str | None = None) -> dict[str, str]:
    """This process's environment with every setting spelled out as ``STREAMTUNE_*``.

    The trainer's private key (``STREAMTUNE_SIGNING_KEY`` and ``_FILE``) goes only to a
    ``train`` child: a worker or serve that is broken into must not be able to sign.

        >>> s = Settings(signing_key="PEM")
        >>> "STREAMTUNE_SIGNING_KEY" in settings_env(s, "serve")
        False
        >>> settings_env(s, "train")["STREAMTUNE_SIGNING_KEY"]
        'PEM'
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTUNE_")}
    for name, value in settings.model_dump().items():
        if value is None or (name in SIGNING_SETTINGS and role not in SIGNERS):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"STREAMTUNE_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """One ``streamtune ROLE`` child process with a log file."""

    def __init__(self, role: str, env: dict[str, str], log: Path) -> None:
        self.role = role
        self.log = log
        handle = log.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "streamtune.cli", role], env=env, cwd=REPO,
            stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        handle.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def printed(self, prefix: str) -> bool:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return any(line.startswith(prefix) for line in text.splitlines())

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class LocalService:
    """Worker, serve and train for ``settings``, started together and stopped together."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.children: dict[str, Child] = {}

    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()

    def start(self, timeout_s: float = 300.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            env = settings_env(self.settings, role)
            self.children[role] = Child(role, env, self.log_dir / f"{role}.log")
        deadline = time.monotonic() + timeout_s
        waiting = {"serve": "serving ", "train": "training:"}
        while True:
            for role, child in self.children.items():
                if not child.alive():
                    self.stop()
                    raise StreamtuneError(
                        f"streamtune {role} exited during start-up:\n{child.tail()}"
                    )
            if all(self.children[r].printed(p) for r, p in waiting.items()) and asyncio.run(
                self._worker_ready()
            ):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise StreamtuneError(
                    f"the service did not start within {timeout_s:.0f}s (logs in {self.log_dir})"
                )
            time.sleep(0.5)

    async def _worker_ready(self) -> bool:
        """The worker owns every join partition once each has written its progress record."""
        from streams.status import read_table
        from streams.topology import Topology

        try:
            table = await read_table(
                self.settings, Topology(self.settings, app=None).changelog("join")
            )
        except Exception:  # not created yet
            return False
        return all(f"~progress:{p}" in table for p in range(self.settings.stream_partitions))

    def check(self) -> None:
        """Raise if a child died."""
        for role, child in self.children.items():
            if not child.alive():
                raise StreamtuneError(f"streamtune {role} died:\n{child.tail()}")

    def stop(self) -> dict[str, int]:
        """SIGTERM every child (serve finishes its batch, train drops an unfinished job)."""
        codes = {role: child.stop() for role, child in reversed(list(self.children.items()))}
        self.children.clear()
        return codes
