"""A task's first adapter: LoRA trained on the task's seed data, gated against the seed probe.

The seed model (a linear probe on the frozen encoder, ``models.seed``) answers until this
adapter is live. It is built once per machine: the result is cached under a key that hashes
every input (task, base model, training data, LoRA spec, training config and this module's
format), so a second call is a file read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import torch

from models.artifact import LoraSpec
from models.gate import GateDecision, GateRule
from models.loader import LoadedBase
from models.seed import anchor_examples, split_seed_data
from models.training import (
    Progress,
    TaskData,
    TrainConfig,
    export_task_adapter,
    lora_tensors,
    train,
)
from schemas.tasks import get_task

log = logging.getLogger(__name__)

#: Bump when the way a bootstrap adapter is built changes, so caches are rebuilt.
FORMAT = "bootstrap/1"


@dataclass(frozen=True)
class Bootstrap:
    task: str
    version: str  # ``bootstrap-<key prefix>``: the same inputs give the same version
    blob: bytes
    metrics: dict[str, float]
    decision: GateDecision | None  # None when read from the cache
    cached: bool


def cache_key(task: str, base_model_id: str, texts: list[str], labels: list[int],
              spec: LoraSpec, config: TrainConfig) -> str:  # fmt: skip
    """A hash of every input that shapes the adapter."""
    digest = hashlib.sha256()
    for part in (
        FORMAT,
        task,
        base_model_id,
        orjson.dumps(asdict(spec)),
        orjson.dumps(asdict(config)),
    ):
        digest.update(part if isinstance(part, bytes) else part.encode())
    for text, label in zip(texts, labels, strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def cached_file(cache_dir: Path, task: str, key: str) -> tuple[str, Path]:
    """The version and the cache file of the bootstrap adapter with cache key ``key``; its
    metrics sit beside the file (``.json``).

    >>> cached_file(Path("/c"), "t", "0123456789abcdef" * 4)
    ('bootstrap-0123456789ab', PosixPath('/c/bootstrap/t-0123456789abcdef01234567.safetensors'))
    """
    return f"bootstrap-{key[:12]}", cache_dir / "bootstrap" / f"{task}-{key[:24]}.safetensors"


def locate(
    task: str, base_model_id: str, *, spec: LoraSpec, config: TrainConfig, cache_dir: Path,
    data_dir: Path,
) -> tuple[str, Path]:  # fmt: skip
    """Where :func:`bootstrap_adapter` keeps (or would keep) the adapter these inputs build,
    and its version, without building it: what ``streamtune doctor`` checks."""
    (texts, labels), _ = split_seed_data(task, data_dir)
    return cached_file(cache_dir, task, cache_key(task, base_model_id, texts, labels, spec, config))


def bootstrap_adapter(
    base: LoadedBase,
    task: str,
    *,
    spec: LoraSpec,
    config: TrainConfig,
    cache_dir: Path,
    data_dir: Path,
    gate: GateRule,
    on_progress: Callable[[Progress], None] | None = None,
) -> Bootstrap:
    """Train (or read from the cache) the task's bootstrap adapter.

    The gate compares it with the seed model on the task's anchor set, which it never saw.
    Raises ``ValueError`` if it does not beat the seed model (nothing is cached then).
    """
    (texts, labels), _ = split_seed_data(task, data_dir)
    key = cache_key(task, base.model_id, texts, labels, spec, config)
    version, path = cached_file(cache_dir, task, key)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return Bootstrap(
            task, version, path.read_bytes(), orjson.loads(meta.read_bytes()), None, True
        )
    num_labels = get_task(task).num_labels
    seed = base.seed(task)
    _, head, _ = lora_tensors(seed)
    log.warning(
        "training the bootstrap adapter of %s on %d examples (once; cached in %s)",
        task, len(texts), path.parent,
    )  # fmt: skip
    result = train(
        base.encoder, base.tokenizer, [TaskData(task, num_labels, texts, labels, head)],
        spec=spec, config=config, device=base.device, on_progress=on_progress,
    )  # fmt: skip
    blob = export_task_adapter(
        result.model, task, num_labels=num_labels, base_model_id=base.model_id, spec=spec
    )
    anchor_texts, anchor_labels = anchor_examples(task, data_dir)
    hits = {}
    for name, adapter in (("new", blob), ("seed", seed)):
        predicted = base.predictor(adapter, task=task, version=name).predict(anchor_texts)
        hits[name] = [p.label == y for p, y in zip(predicted, anchor_labels, strict=True)]
    decision = gate.decide(
        hits["new"], hits["seed"], anchor_new=0.0, anchor_live=0.0
    )  # the anchor is the holdout here
    metrics = {
        "train_examples": float(len(texts)),
        "train_examples_per_s": round(result.examples_per_s, 1),
        "epochs_run": float(result.epochs_run),
        **decision.figures,
    }
    if not decision.promote:
        raise ValueError(
            f"the bootstrap adapter of {task} does not beat its seed model: {decision.reason}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((path, blob), (meta, orjson.dumps(metrics))):
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return Bootstrap(task, version, blob, metrics, decision, False)


def evaluate_file(
    base: LoadedBase, blob: bytes, task: str, texts: list[str], labels: list[int]
) -> float:
    """Accuracy of ``blob`` on labelled texts through the serving path."""
    with torch.inference_mode():
        predicted = base.predictor(blob, task=task, version="eval").predict(texts)
    return sum(p.label == y for p, y in zip(predicted, labels, strict=True)) / max(1, len(labels))
