"""The HTTP surfaces are private by default (issue 24, item 10), on the real broker.

Before: every server (serve, worker and trainer ``/metrics`` and ``/healthz``, the monitor's
dashboard) bound ``0.0.0.0`` with no setting to change it, the monitor printed
``http://127.0.0.1:…`` while it listened on every interface, and ``/api/state`` answered
anybody. Now they bind ``STREAMTUNE_HTTP_HOST`` (default loopback), the monitor prints the
address it really listens on, and ``STREAMTUNE_MONITOR_TOKEN`` guards the dashboard.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from streamtune.core.settings import Settings
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.security]

EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 (what a container with a published port binds)


def listening_on(port: int) -> set[str]:
    """The local addresses with a socket listening on TCP ``port`` (Linux /proc/net/tcp)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def start_monitor(settings: Settings, port: int, **env: str) -> tuple[subprocess.Popen[str], str]:
    """`streamtune monitor` as a real process; returns it and the line it announced itself with."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtune.cli", "monitor", "--port", str(port)],
        env={
            **os.environ,
            "STREAMTUNE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "STREAMTUNE_TOPIC_PREFIX": settings.topic_prefix,
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("monitor: dashboard on"):
            return proc, line
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"the monitor did not start (exit {proc.wait()})")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http only)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(300)
def test_the_monitor_binds_loopback_by_default_and_prints_where_it_listens(topics):
    port = free_port()
    proc, line = start_monitor(topics, port)
    try:
        assert listening_on(port) == {"127.0.0.1"}, "the monitor listens on every interface"
        assert f"http://127.0.0.1:{port}/" in line
    finally:
        stop(proc)
    # In a container whose port is published, the setting opens it, and the line says so.
    port = free_port()
    proc, line = start_monitor(topics, port, STREAMTUNE_HTTP_HOST=EVERY_INTERFACE)
    try:
        assert listening_on(port) == {EVERY_INTERFACE}
        assert f"http://{EVERY_INTERFACE}:{port}/" in line, f"the monitor announced: {line!r}"
    finally:
        stop(proc)


@pytest.mark.timeout(300)
def test_metrics_and_healthz_of_the_processes_bind_the_configured_host(topics):
    """serve, the worker and the trainer all serve /metrics and /healthz through
    ``observed``; it binds ``http_host``, loopback unless set."""
    from streamtune.core.observability import Liveness, Metrics, observed

    async def bound(settings: Settings) -> set[str]:
        port = free_port()
        metrics = Metrics()
        async with observed(
            settings, metrics, Liveness(60, metrics), port=port, group_id="g", topics=[]
        ):
            return listening_on(port)

    assert asyncio.run(bound(topics)) == {"127.0.0.1"}
    wide = Settings(**{**topics.model_dump(), "http_host": EVERY_INTERFACE})
    assert asyncio.run(bound(wide)) == {EVERY_INTERFACE}


@pytest.mark.timeout(300)
def test_a_monitor_token_guards_the_dashboard_and_api_state(topics):
    port = free_port()
    proc, _ = start_monitor(topics, port, STREAMTUNE_MONITOR_TOKEN="s3cret-token")
    base = f"http://127.0.0.1:{port}"
    try:
        seen = {
            "api, no token": status(f"{base}/api/state"),
            "api, wrong token": status(f"{base}/api/state", {"Authorization": "Bearer nope"}),
            "api, bearer": status(f"{base}/api/state", {"Authorization": "Bearer s3cret-token"}),
            "api, query": status(f"{base}/api/state?token=s3cret-token"),
            "dashboard, no token": status(f"{base}/"),
            "dashboard, query": status(f"{base}/?token=s3cret-token"),
            "healthz": status(f"{base}/healthz"),  # healthchecks and Prometheus need no token
            "metrics": status(f"{base}/metrics"),
        }
    finally:
        stop(proc)
    assert seen == {
        "api, no token": 401,
        "api, wrong token": 401,
        "api, bearer": 200,
        "api, query": 200,
        "dashboard, no token": 401,
        "dashboard, query": 200,
        "healthz": 200,
        "metrics": 200,
    }, seen
