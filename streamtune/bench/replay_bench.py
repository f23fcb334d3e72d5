"""``streamtune bench replay``: how fast ``streamtune replay`` publishes TFNS rows.

Baseline, in the same run and against the same broker: a bare aiokafka producer with the
same reliability settings (idempotent, acks=all) sending the same, already serialised
records. ``streamtune replay`` reads the CSV lazily, so its clock (from before the first
row is read to the last acknowledgement) includes parsing the file; the ratio is what
parsing, validation and pacing cost.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Iterator
from itertools import chain, islice
from pathlib import Path

from schemas.fields import now_ms
from schemas.messages import Interaction
from streamtune.bench.common import raw_aiokafka_send
from streamtune.core.clients import make_admin
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from streamtune.replay import BadRow, ReplayRow, read_rows, replay

DATA = Path(__file__).resolve().parents[2] / "data" / "tfns"


def _lazy_rows(n: int) -> Iterator[ReplayRow | BadRow]:
    """The first ``n`` rows of TFNS train then valid, parsed only as they are consumed."""
    files = (DATA / "train.csv", DATA / "valid.csv")
    return islice(chain.from_iterable(read_rows(f, "tfns-sentiment") for f in files), n)


def _rows(n: int) -> list[ReplayRow]:
    return [r for r in _lazy_rows(n) if isinstance(r, ReplayRow)]


async def _raw_aiokafka(settings: Settings, topic: str, rows: list[ReplayRow]) -> float:
    records = [
        (
            f"raw-{r.line}-{i}".encode(),
            Interaction(
                interaction_id=f"raw-{i}", task="tfns-sentiment", text=r.text, ts_ms=now_ms()
            ).to_bytes(),
        )
        for i, r in enumerate(rows)
    ]
    return await raw_aiokafka_send(settings, topic, records)


async def _run(settings: Settings, n: int) -> dict[str, object]:
    settings = Settings(
        **{**settings.model_dump(), "topic_prefix": f"bench-{secrets.token_hex(4)}-"}
    )
    await create_topics(settings)
    rows = _rows(n)
    try:
        # Warm both paths (connections, metadata) before timing.
        await _raw_aiokafka(settings, settings.topic("interactions"), rows[:200])
        raw_s = await _raw_aiokafka(settings, settings.topic("interactions"), rows)
        # The same rows, parsed inside replay's clock as `streamtune replay FILE` parses them.
        stats = await replay(
            settings, _lazy_rows(n), task="tfns-sentiment", rate=0, id_prefix="bench",
            progress=False,
        )  # fmt: skip
    finally:
        admin = make_admin(settings)
        await admin.start()
        try:
            await admin.delete_topics([s.name for s in settings.topic_specs()])
        finally:
            await admin.close()
    replay_rate = stats.interactions / stats.seconds
    raw_rate = len(rows) / raw_s
    return {
        "bench": "replay",
        "rows": len(rows),
        "replay_rows_per_s": round(replay_rate, 1),
        "raw_aiokafka_rows_per_s": round(raw_rate, 1),
        "ratio_vs_raw": round(replay_rate / raw_rate, 3),
        "bad_rows": stats.bad_rows,
    }


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    return asyncio.run(_run(settings, args.rows or 10_000))
