"""``streamtune bench train``: train a TFNS adapter as an online job does, evaluate it on TFNS valid.

The adapter starts from the seed model (the encoder with its seed head) with fresh LoRA
weights and trains with the trainer's settings (early stopping on a 10% split) on TFNS
train less its anchor rows; it is evaluated on the 2,388 valid tweets through the serving
path. In the same run and on the same texts:

- ``base_valid_*``: the seed model it started from;
- ``bootstrap_valid_*``: the task's bootstrap adapter (``streamtune bootstrap``: LoRA on every
  layer, more epochs), read from its cache, the shipped one, or trained now (about 10 minutes
  on 2 CPU cores with native bf16, once per machine); ``bootstrap_train_examples_per_s`` and
  ``bootstrap_seconds`` are its rate and wall time where it was built;
- ``baseline_*``: the previous defaults (LoRA on every layer, no frozen prefix), trained
  on the same rows for the same epochs with the same validation split and evaluated alike
  (``baseline_valid_accuracy``). Both runs are warm (each first trains a few steps that are
  thrown away) and run in alternating order: the baseline first, then ours, and with
  ``--rounds N`` the order flips each round and each side's rate is its median.
  ``speedup_vs_baseline`` is the ratio of the rates.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from models.artifact import LoraSpec
from models.device import bf16_supported
from models.loader import LoadedBase, load_base
from models.metrics import accuracy, macro_f1
from models.seed import split_seed_data
from models.training import (
    TaskData,
    TrainConfig,
    TrainResult,
    export_task_adapter,
    lora_tensors,
    train,
)
from streamtune.core.settings import Settings
from streamtune.train.bootstrap import build as build_bootstrap
from streamtune.train.bootstrap import progress_bar
from streamtune.train.config import bootstrap_recipe, lora_spec, recipe_summary, train_config

TASK = "tfns-sentiment"


def _load(path: Path) -> tuple[list[str], list[int]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def _progress_printer() -> object:
    import sys

    from tqdm import tqdm

    bar = tqdm(unit="step", desc="bench train", disable=not sys.stderr.isatty())

    def update(p: object) -> None:
        bar.total = p.steps  # type: ignore[attr-defined]
        bar.update(1)

    return update


#: Steps each side trains, thrown away, before it is timed (imports, allocator, oneDNN).
WARMUP_STEPS = 5


def _train_once(
    base: LoadedBase, data: TaskData, spec: LoraSpec, config: TrainConfig,
    on_progress: object = None,
) -> TrainResult:  # fmt: skip
    return train(
        base.encoder, base.tokenizer, [data], spec=spec, config=config, device=base.device,
        on_progress=on_progress,  # type: ignore[arg-type]
    )  # fmt: skip


def _warm_up(base: LoadedBase, data: TaskData, spec: LoraSpec, config: TrainConfig) -> None:
    n = min(len(data.texts), WARMUP_STEPS * config.batch_size)
    few = TaskData(data.task, data.num_labels, data.texts[:n], data.labels[:n], data.head)
    _train_once(base, few, spec, replace(config, epochs=1, validation_fraction=0.0))


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    base = load_base(settings)
    device, encoder = base.device, base.encoder
    (train_x, train_y), _ = split_seed_data(TASK, settings.data_dir)
    valid_x, valid_y = _load(settings.data_dir / "tfns" / "valid.csv")
    if getattr(args, "rows", None):
        train_x, train_y = train_x[: args.rows], train_y[: args.rows]
    seed = base.seed(TASK)
    _, head, _ = lora_tensors(seed)
    spec = lora_spec(settings.train, encoder)
    epochs = getattr(args, "epochs", None)
    config = train_config(settings.train, **({"epochs": epochs} if epochs else {}))
    # The previous defaults: LoRA r=16 on every layer, so no frozen prefix.
    old = LoraSpec(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=spec.target_modules)
    data = TaskData(TASK, 3, train_x, train_y, head)
    for side in (old, spec):
        _warm_up(base, data, side, config)
    rates: dict[str, list[float]] = {"adapter": [], "baseline": []}
    runs: dict[str, TrainResult] = {}
    seconds: dict[str, float] = {}
    for round_ in range(max(1, getattr(args, "rounds", None) or 1)):
        order = [("baseline", old), ("adapter", spec)]
        for name, side in order if round_ % 2 == 0 else order[::-1]:
            began = time.perf_counter()
            runs[name] = _train_once(
                base, data, side, config, _progress_printer() if name == "adapter" else None
            )
            seconds[name] = time.perf_counter() - began
            rates[name].append(runs[name].examples_per_s)
    result, train_s = runs["adapter"], seconds["adapter"]
    rate, baseline = statistics.median(rates["adapter"]), statistics.median(rates["baseline"])
    blob = export_task_adapter(
        result.model, TASK, num_labels=3, base_model_id=base.model_id, spec=spec
    )
    baseline_blob = export_task_adapter(
        runs["baseline"].model, TASK, num_labels=3, base_model_id=base.model_id, spec=old
    )
    _, boot = build_bootstrap(settings, TASK, base, on_progress=progress_bar(TASK))
    scores = {}
    for name, adapter in (
        ("adapter", blob), ("baseline", baseline_blob), ("base", seed), ("bootstrap", boot.blob)
    ):  # fmt: skip
        predicted = [
            p.label for p in base.predictor(adapter, task=TASK, version=name).predict(valid_x)
        ]
        scores[name] = (accuracy(valid_y, predicted), macro_f1(valid_y, predicted, 3))
    return {
        "bench": "train",
        "device": device.type
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "train_examples": len(train_x),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_examples_per_s": round(rate, 1),
        "baseline_train_examples_per_s": round(baseline, 1),
        "speedup_vs_baseline": round(rate / baseline, 2),
        "baseline_valid_accuracy": round(scores["baseline"][0], 4),
        "baseline_train_seconds": round(seconds["baseline"], 1),
        "baseline_epochs_run": runs["baseline"].epochs_run,
        "rounds": len(rates["adapter"]),
        "lora_layers": ",".join(map(str, spec.layers)) if spec.layers else "all",
        "train_seconds": round(train_s, 1),
        "valid_accuracy": round(scores["adapter"][0], 4),
        "valid_macro_f1": round(scores["adapter"][1], 4),
        "base_valid_accuracy": round(scores["base"][0], 4),
        "base_valid_macro_f1": round(scores["base"][1], 4),
        "accuracy_gain_vs_base_points": round(100 * (scores["adapter"][0] - scores["base"][0]), 2),
        "bootstrap_valid_accuracy": round(scores["bootstrap"][0], 4),
        "bootstrap_valid_macro_f1": round(scores["bootstrap"][1], 4),
        "bootstrap_gain_vs_base_points": round(
            100 * (scores["bootstrap"][0] - scores["base"][0]), 2
        ),
        "bootstrap_train_examples_per_s": boot.metrics.get("train_examples_per_s"),
        # The first run's cost: the build's wall time when it was built (now or earlier).
        "bootstrap_seconds": boot.metrics.get("train_seconds"),
        "bootstrap_built_now": not boot.cached and not boot.shipped,
        "bootstrap_recipe": recipe_summary(*bootstrap_recipe(settings.train, encoder)),
        "bootstrap_shipped": boot.shipped,
        "bootstrap_version": boot.version,
        "trainable_params": result.trainable_params,
        "lora_r": spec.r,
        "lora_targets": ",".join(spec.target_modules),
        "bf16_autocast": config.bf16,
        # What training ran at: bf16 autocast only where asked for and measured faster.
        "precision": "bf16" if config.bf16 and bf16_supported(device) else "fp32",
    }
