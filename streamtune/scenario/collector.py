"""Read predictions as serve publishes them, noting when each arrived (demo, benchmarks, tests)."""

from __future__ import annotations

import asyncio
import contextlib

from schemas.messages import Prediction
from schemas.topics import PREDICTIONS
from streamtune.core.clients import make_consumer
from streamtune.core.settings import Settings


class PredictionCollector:
    """Reads predictions as they are published, noting when each arrived."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.received: list[tuple[float, Prediction]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = make_consumer(
            self.settings, self.settings.topic(PREDICTIONS), group_id=None
        )
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
