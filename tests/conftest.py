"""Shared fixtures. Integration tests talk to a real Apache Kafka broker.

``make test`` starts the local broker first. Run alone, the suite starts it too when
``STREAMTUNE_BOOTSTRAP_SERVERS`` points at the default local address and nothing answers
there, and stops it again at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamtune.core.settings import Settings

# The processes tests start serve no /metrics unless a test gives a port: many run at once.
for _process in ("SERVE", "WORKER", "TRAIN"):
    os.environ.setdefault(f"STREAMTUNE_{_process}_METRICS_PORT", "0")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def free_port() -> int:
    """A free port below the ephemeral range, so no client's own socket can take it meanwhile."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 20000-32000")


def unique_prefix() -> str:
    return f"t{secrets.token_hex(4)}-"


@pytest.fixture(scope="session")
def broker_bootstrap() -> Iterator[str]:
    """The bootstrap address of a running broker, starting the local one if needed."""
    from streamtune.core.local_kafka import LocalKafka, _answers_metadata

    base = Settings()
    if asyncio.run(_answers_metadata(base.bootstrap_servers, 5.0)):
        yield base.bootstrap_servers
        return
    if os.environ.get("STREAMTUNE_BOOTSTRAP_SERVERS"):
        pytest.fail(f"no Kafka broker answers at {base.bootstrap_servers}")
    broker = LocalKafka(base)
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_settings(broker_bootstrap: str) -> Settings:
    """Settings with a unique topic prefix, so tests never see each other's data."""
    return Settings(bootstrap_servers=broker_bootstrap, topic_prefix=unique_prefix())


@pytest.fixture
def topics(kafka_settings: Settings) -> Iterator[Settings]:
    """``kafka_settings`` with every streamtune topic created; deleted afterwards."""
    from streamtune.core.topic_admin import create_topics

    asyncio.run(create_topics(kafka_settings))
    yield kafka_settings
    asyncio.run(_delete_topics(kafka_settings))


async def _delete_topics(settings: Settings) -> None:
    """Best effort: unique prefixes keep tests apart anyway."""
    import contextlib

    from streamtune.core.topic_admin import delete_prefixed_topics

    with contextlib.suppress(Exception):
        await delete_prefixed_topics(settings)
