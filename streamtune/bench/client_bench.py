"""``streamtune bench client``: how fast the producer client publishes interactions.

Baseline, in the same run and against the same broker: a bare aiokafka producer with the
same reliability settings (idempotent, acks=all), sending the same records, already
serialised and keyed, one ``send()`` each (futures gathered every 5,000, as
``bench replay``'s baseline does). The client's clock covers what a producer's code pays:
building and validating each :class:`~schemas.messages.Interaction` from its fields,
serialising it, batching, and waiting for every acknowledgement (``flush``).
Each side runs twice, interleaved, after a warm-up of both; the better run of each counts.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from itertools import cycle, islice

from schemas.fields import now_ms
from schemas.messages import Interaction
from streamtune.bench.common import raw_aiokafka_send, scratch_topics
from streamtune.bench.replay_bench import _rows
from streamtune.client import DEFAULT_MAX_IN_FLIGHT, StreamtuneProducer
from streamtune.core.settings import Settings

TASK = "tfns-sentiment"


@dataclass(frozen=True)
class _Record:
    interaction_id: str
    text: str


async def _raw_aiokafka(settings: Settings, records: list[_Record], ts: int) -> float:
    topic = settings.topic("interactions")
    encoded = [
        (
            r.interaction_id.encode(),
            Interaction(
                interaction_id=r.interaction_id, task=TASK, text=r.text, ts_ms=ts
            ).to_bytes(),
        )
        for r in records
    ]
    return await raw_aiokafka_send(settings, topic, encoded)


async def _client(settings: Settings, records: list[_Record], ts: int) -> float:
    async with StreamtuneProducer(settings, source="bench") as client:
        began = time.monotonic()
        for r in records:
            await client.send_interaction(r.interaction_id, task=TASK, text=r.text, ts_ms=ts)
        await client.flush()
        return time.monotonic() - began


async def _run(settings: Settings, n: int) -> dict[str, object]:
    texts = [r.text for r in _rows(min(n, 12_000))]
    ts = now_ms()

    def records(tag: str, count: int) -> list[_Record]:
        return [_Record(f"{tag}-{i}", text) for i, text in enumerate(islice(cycle(texts), count))]

    raw_s: list[float] = []
    client_s: list[float] = []
    async with scratch_topics(settings, "client") as settings:
        await _raw_aiokafka(settings, records("warm-raw", 500), ts)
        await _client(settings, records("warm-client", 500), ts)
        for round_ in range(2):
            raw_s.append(await _raw_aiokafka(settings, records(f"raw{round_}", n), ts))
            client_s.append(await _client(settings, records(f"client{round_}", n), ts))
    client_rate = n / min(client_s)
    raw_rate = n / min(raw_s)
    return {
        "bench": "client",
        "rows": n,
        "client_rows_per_s": round(client_rate, 1),
        "raw_aiokafka_rows_per_s": round(raw_rate, 1),
        "ratio_vs_raw": round(client_rate / raw_rate, 3),
        "client_seconds": [round(s, 3) for s in client_s],
        "raw_aiokafka_seconds": [round(s, 3) for s in raw_s],
        "max_in_flight": DEFAULT_MAX_IN_FLIGHT,
    }


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    return asyncio.run(_run(settings, args.rows or 100_000))
