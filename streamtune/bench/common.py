"""Helpers shared by the Kafka benchmarks: a throwaway topic namespace and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator

from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics, delete_prefixed_topics


@contextlib.asynccontextmanager
async def scratch_topics(
    settings: Settings, name: str, **overrides: object
) -> AsyncIterator[Settings]:
    """Settings with fresh, uniquely prefixed topics, deleted afterwards."""
    prefix = f"bench-{name}-{secrets.token_hex(3)}-"
    scratch = Settings(**{**settings.model_dump(), "topic_prefix": prefix, **overrides})
    await create_topics(scratch)
    try:
        yield scratch
    finally:
        await delete_prefixed_topics(scratch)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile.

    >>> percentile([1, 2, 3, 4], 50), percentile([1, 2, 3, 4], 99)
    (2, 4)
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


async def raw_aiokafka_send(
    settings: Settings, topic: str, records: list[tuple[bytes, bytes]]
) -> float:
    """Seconds for a plain aiokafka producer (the project's settings: idempotent, acks=all) to
    send ``(key, value)`` records and have all acknowledged: the baseline of the producing
    benchmarks. At most 5,000 wait unacknowledged at once."""
    producer = make_producer(settings)
    await producer.start()
    try:
        began = time.monotonic()
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.monotonic() - began
    finally:
        await producer.stop()
