"""``streamtune bench inference``: the serve path, Kafka to Kafka, on the TFNS valid texts.

Side by side in the same process and on the same texts and weights (the task's seed model):

- ``serve``: interactions are published as a backlog, and the clock runs from the first
  send to the last prediction read back from Kafka; then a steady load at half that rate
  gives the latency percentiles (interaction timestamp to prediction);
- the same serve path in fp32, when the served precision is something else;
- a Hugging Face ``pipeline("text-classification")`` over the same model, as users run it;
- a matrix-multiply rate measured now, divided by the model's FLOPs per text at the measured
  mean token count: what the hardware would allow if inference were only matrix multiplies.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import torch

from models.base_encoder import load_encoder, load_tokenizer, locate_base_model
from models.device import resolve_device, resolve_precision
from models.hf_pipeline import text_classification_pipeline
from models.loader import load_base
from schemas.tasks import get_task
from streamtune.bench.common import percentile, scratch_topics
from streamtune.core.settings import Settings
from streamtune.replay import ReplayRow, read_rows, replay
from streamtune.scenario.collector import PredictionCollector
from streamtune.serve import running

TASK = "tfns-sentiment"
VALID = Path(__file__).resolve().parents[2] / "data" / "tfns" / "valid.csv"


async def _serve_run(
    settings: Settings, rows: list[ReplayRow], precision: str, latency_s: float
) -> dict[str, float]:
    truth = {f"bench-{r.line}": r.label for r in rows}
    async with (
        scratch_topics(
            settings, "inference", serve_tasks=TASK, serve_precision=precision
        ) as scratch,
        running(scratch) as server,
    ):
        collector = PredictionCollector(scratch)
        await collector.start()
        loop = asyncio.get_running_loop()
        try:
            began = loop.time()
            await replay(scratch, iter(rows), task=TASK, rate=0, id_prefix="bench", progress=False)
            await collector.wait_for(len(rows))
            elapsed = collector.received[len(rows) - 1][0] - began
            answers = {p.interaction_id: p for _, p in collector.received[: len(rows)]}
            accuracy = sum(answers[k].label == v for k, v in truth.items()) / len(truth)
            rate = len(rows) / elapsed
            # Latency under a steady load at half the throughput.
            steady = rows[: int(rate * 0.5 * latency_s)]
            await replay(
                scratch,
                iter(steady),
                task=TASK,
                rate=rate * 0.5,
                id_prefix="steady",
                progress=False,
            )
            await collector.wait_for(len(rows) + len(steady))
            latencies = [p.latency_ms for _, p in collector.received[len(rows) :]]
        finally:
            await collector.stop()
        return {
            "texts_per_s": rate,
            "accuracy": accuracy,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "batches": server.stats.batches,
        }


def _pipeline_run(settings: Settings, rows: list[ReplayRow]) -> dict[str, float]:
    # The pipeline runs as users run it: fp32, on the CPU.
    base = load_base(Settings(**{**settings.model_dump(), "device": "cpu"}), precision="fp32")
    predictor = base.predictor(base.seed(TASK), task=TASK, version="base")
    labels = get_task(TASK).labels
    pipe = text_classification_pipeline(predictor.model, base.tokenizer, labels)
    texts = [r.text for r in rows]
    pipe(texts[:16])  # warm up
    began = time.perf_counter()
    out = pipe(texts)
    elapsed = time.perf_counter() - began
    accuracy = sum(
        labels.index(o["label"]) == r.label for o, r in zip(out, rows, strict=True)
    ) / len(rows)
    return {"texts_per_s": len(rows) / elapsed, "accuracy": accuracy}


def _flop_bound(settings: Settings, rows: list[ReplayRow], precision: str) -> tuple[float, float]:
    """(texts/s the measured matmul rate allows, mean tokens per text)."""
    ref = locate_base_model(settings.base_model)
    tokenizer = load_tokenizer(ref.path)
    config = load_encoder(ref.path).config
    lengths = [
        len(ids)
        for ids in tokenizer([r.text for r in rows], truncation=True, max_length=128)["input_ids"]
    ]
    tokens = sum(lengths) / len(lengths)
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = 2 * tokens * (4 * h * h + 2 * h * inter) + 2 * 2 * tokens * tokens * h
    flops_per_text = layers * per_layer + 2 * h * 3
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(4096, h, dtype=dtype)
    b = torch.randn(h, inter, dtype=dtype)
    for _ in range(3):
        a @ b
    began = time.perf_counter()
    reps = 20
    for _ in range(reps):
        a @ b
    rate = reps * 2 * 4096 * h * inter / (time.perf_counter() - began)
    return rate / flops_per_text, tokens


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    rows = [r for r in read_rows(VALID, TASK) if isinstance(r, ReplayRow)]
    if getattr(args, "rows", None):
        rows = rows[: args.rows]
    precision = resolve_precision(settings, resolve_device(settings))
    served = asyncio.run(_serve_run(settings, rows, precision, latency_s=8.0))
    fp32 = (
        served
        if precision == "fp32"
        else asyncio.run(_serve_run(settings, rows, "fp32", latency_s=4.0))
    )
    hf = _pipeline_run(settings, rows)
    bound, tokens = _flop_bound(settings, rows, precision)
    return {
        "bench": "inference",
        "texts": len(rows),
        "precision": precision,
        "serve_texts_per_s": round(served["texts_per_s"], 1),
        "hf_pipeline_texts_per_s": round(hf["texts_per_s"], 1),
        "ratio_vs_pipeline": round(served["texts_per_s"] / hf["texts_per_s"], 2),
        "flop_bound_texts_per_s": round(bound, 1),
        "ratio_vs_flop_bound": round(served["texts_per_s"] / bound, 3),
        "mean_tokens": round(tokens, 1),
        "p50_ms": round(served["p50_ms"], 1),
        "p99_ms": round(served["p99_ms"], 1),
        "accuracy": round(served["accuracy"], 4),
        "fp32_serve_texts_per_s": round(fp32["texts_per_s"], 1),
        "fp32_accuracy": round(fp32["accuracy"], 4),
        "accuracy_delta_vs_fp32_points": round(100 * (served["accuracy"] - fp32["accuracy"]), 2),
        "hf_pipeline_accuracy": round(hf["accuracy"], 4),
        "device": str(resolve_device(settings)),
    }
