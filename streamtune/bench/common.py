"""Helpers shared by the Kafka benchmarks: a throwaway topic namespace, prediction readers."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer

from schemas.messages import Prediction
from schemas.topics import PREDICTIONS
from streamtune.kafka.topics import create_topics, delete_prefixed_topics
from streamtune.settings import Settings


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


class PredictionCollector:
    """Reads predictions as they are published, noting when each arrived."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.received: list[tuple[float, Prediction]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            self.settings.topic(PREDICTIONS), **self.settings.kafka_client_kwargs(),
            group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = loop.time()
            for records in batch.values():
                self.received.extend((now, Prediction.from_bytes(r.value)) for r in records)

    async def wait_for(self, count: int, timeout_s: float = 600) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.received) < count:
            if loop.time() > deadline:
                raise TimeoutError(f"only {len(self.received)} of {count} predictions arrived")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


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
