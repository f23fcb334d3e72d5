"""Publish replay rows as interactions (and, optionally, delayed feedback) at a paced rate."""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from schemas.base import describe
from schemas.fields import now_ms
from schemas.messages import Feedback, Interaction
from schemas.tasks import get_task
from schemas.topics import FEEDBACK, INTERACTIONS
from streamtune.core.clients import login_name, make_producer, require_topics
from streamtune.core.errors import ConfigError, DeliveryError
from streamtune.core.settings import Settings
from streamtune.replay.rows import BadRow, ReplayRow

log = logging.getLogger(__name__)

# Sized so replay never holds more than a few MB of unacknowledged sends.
MAX_IN_FLIGHT = 5000


@dataclass
class ReplayStats:
    interactions: int = 0
    feedback: int = 0
    bad_rows: int = 0
    seconds: float = 0.0
    bad_examples: list[BadRow] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.interactions / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"published {self.interactions} interactions and {self.feedback} feedback records "
            f"in {self.seconds:.1f}s ({self.rate:.0f} interactions/s); skipped {self.bad_rows} bad rows"
        )


def default_id_prefix(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "-", path.stem)[:40] or "replay"
    return f"{stem}-{secrets.token_hex(3)}"


class _Pacer:
    """Keeps a target rate (events/s); 0 means as fast as possible."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()

    async def wait(self, sent: int) -> None:
        if self.rate <= 0:
            return
        ahead = self.start + sent / self.rate - time.monotonic()
        if ahead > 0.002:
            await asyncio.sleep(ahead)


async def replay(
    settings: Settings,
    rows: Iterator[ReplayRow | BadRow],
    *,
    task: str,
    rate: float = 0.0,
    feedback_fraction: float = 0.0,
    feedback_delay_s: float = 0.0,
    id_prefix: str = "replay",
    seed: int | None = None,
    source: str = "replay",
    total: int | None = None,
    on_bad_row: Callable[[BadRow], None] | None = None,
    progress: bool | None = None,
) -> ReplayStats:
    """Publish ``rows`` as interactions; feedback for a fraction of them after a delay."""
    from tqdm import tqdm

    if not 0.0 <= feedback_fraction <= 1.0:
        raise ConfigError(f"feedback fraction {feedback_fraction} must lie in [0, 1]")
    if feedback_delay_s < 0 or rate < 0:
        raise ConfigError("feedback delay and rate must not be negative")
    get_task(task)
    rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
    stats = ReplayStats()
    interactions_topic = settings.topic(INTERACTIONS)
    feedback_topic = settings.topic(FEEDBACK)
    due: list[tuple[float, int, str, int]] = []  # (due time, tiebreak, interaction_id, label)
    in_flight: list[asyncio.Future[object]] = []
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total, unit="msg", desc="replay", disable=not show, mininterval=0.5)
    producer = make_producer(settings)
    await producer.start()
    try:
        await require_topics(producer, [interactions_topic, feedback_topic], login_name(settings))
    except BaseException:
        await producer.stop()
        raise
    began = time.monotonic()
    pacer = _Pacer(rate)

    async def drain(limit: int) -> None:
        if len(in_flight) <= limit:
            return
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        in_flight.clear()
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise DeliveryError(f"{len(failures)} records were not acknowledged: {failures[0]!r}")

    async def send_due_feedback(until: float) -> None:
        while due and due[0][0] <= until:
            _, _, interaction_id, label = heapq.heappop(due)
            fb = Feedback(
                interaction_id=interaction_id, task=task, label=label, ts_ms=now_ms(), source=source
            )
            in_flight.append(
                await producer.send(feedback_topic, fb.to_bytes(), key=interaction_id.encode())
            )
            stats.feedback += 1

    def skip(bad: BadRow) -> None:
        stats.bad_rows += 1
        if len(stats.bad_examples) < 100:
            stats.bad_examples.append(bad)
        if on_bad_row is not None:
            on_bad_row(bad)
        bar.update(1)

    try:
        for row in rows:
            if isinstance(row, BadRow):
                skip(row)
                continue
            interaction_id = f"{id_prefix}-{row.line}"
            try:
                itx = Interaction(
                    interaction_id=interaction_id,
                    task=task,
                    text=row.text,
                    ts_ms=now_ms(),
                    entity=row.entity,
                    source=source,
                )
            except ValidationError as exc:
                skip(BadRow(row.line, describe(exc)))
                continue
            await pacer.wait(stats.interactions)
            in_flight.append(
                await producer.send(interactions_topic, itx.to_bytes(), key=interaction_id.encode())
            )
            stats.interactions += 1
            if row.label is not None and feedback_fraction > 0 and rng.random() < feedback_fraction:
                heapq.heappush(
                    due,
                    (
                        time.monotonic() + feedback_delay_s,
                        stats.interactions,
                        interaction_id,
                        row.label,
                    ),
                )
            await send_due_feedback(time.monotonic())
            await drain(MAX_IN_FLIGHT)
            bar.update(1)
        # Feedback still owed: publish each when its delay has passed.
        while due:
            await asyncio.sleep(max(0.0, due[0][0] - time.monotonic()))
            await send_due_feedback(time.monotonic())
        await drain(0)
    finally:
        stats.seconds = time.monotonic() - began
        bar.close()
        await producer.stop()
    return stats
