"""The webhook sink: POST each alert as JSON, off the stream's path.

The alert agent hands alerts to :meth:`WebhookSink.offer`, which never waits: it puts the
alert on a bounded queue, or, when the queue is full, counts it and dead-letters it at once.
One background task (:meth:`WebhookSink.run`) drains the queue. Each POST has a timeout and
is retried with exponential backoff on network errors, timeouts, 408, 429 and 5xx; other
4xx answers are final. An alert that could not be delivered is counted (``failed``) and
handed to ``undeliverable`` (the worker dead-letters it). So a dead or hanging webhook costs
the stream nothing but the queue's memory.

The bearer token comes from the environment or a file (``alert_webhook_token[_file]``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from schemas.messages import Alert

log = logging.getLogger(__name__)

#: Retried answers: the server may take the same request later.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    token: str | None = None
    timeout_s: float = 5.0
    retries: int = 3
    queue_size: int = 1000
    backoff_s: float = 0.5

    def __repr__(self) -> str:  # never print the token
        return f"WebhookConfig(url={self.url!r}, token={'***' if self.token else None})"


Undeliverable = Callable[[Alert, int | None, str], Awaitable[None]]


class WebhookSink:
    """A bounded queue of alerts and the task that POSTs them."""

    def __init__(self, config: WebhookConfig, undeliverable: Undeliverable) -> None:
        self.config = config
        self.undeliverable = undeliverable
        self.queue: asyncio.Queue[tuple[Alert, int | None]] = asyncio.Queue(config.queue_size)
        self.counts = {"offered": 0, "delivered": 0, "retries": 0, "failed": 0, "overflow": 0}
        self._overflow: set[asyncio.Task[None]] = set()

    def offer(self, alert: Alert, offset: int | None = None) -> bool:
        """Queue ``alert`` (at ``offset`` of ``alerts``) for delivery; never waits."""
        self.counts["offered"] += 1
        try:
            self.queue.put_nowait((alert, offset))
            return True
        except asyncio.QueueFull:
            self.counts["overflow"] += 1
            why = f"webhook queue full ({self.config.queue_size} alerts waiting)"
            task = asyncio.ensure_future(self.undeliverable(alert, offset, why))
            self._overflow.add(task)  # keep a reference until it is done
            task.add_done_callback(self._overflow.discard)
            return False

    async def run(self) -> None:
        """Deliver queued alerts until cancelled."""
        headers = {"Content-Type": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            while True:
                alert, offset = await self.queue.get()
                why = await self._deliver(session, alert)
                if why is not None:
                    self.counts["failed"] += 1
                    log.warning("alert %s undeliverable to the webhook: %s", alert.alert_id, why)
                    await self.undeliverable(alert, offset, why)

    async def _deliver(self, session: aiohttp.ClientSession, alert: Alert) -> str | None:
        """POST with retries; ``None`` when delivered, else why not."""
        body = alert.to_bytes()
        why = "not tried"
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.counts["retries"] += 1
                await asyncio.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                async with session.post(self.config.url, data=body) as response:
                    if 200 <= response.status < 300:
                        self.counts["delivered"] += 1
                        return None
                    why = f"HTTP {response.status} from {self.config.url}"
                    if response.status not in RETRY_STATUS:
                        return why
            except TimeoutError:
                why = f"no answer from {self.config.url} within {self.config.timeout_s:g} s"
            except aiohttp.ClientError as exc:
                why = f"{type(exc).__name__}: {exc}"
        return f"{why} (after {self.config.retries + 1} attempts)"
