"""A task's first adapter: LoRA trained on the task's seed data, gated against the seed probe.

The seed model (a linear probe on the frozen encoder, ``models.seed``) answers until this
adapter is live. It is built once per machine: the result is cached under a key that hashes
every input (task, base model, training data, LoRA spec, training config and this module's
format), so a second call is a file read.

Training it takes about 10 minutes on 2 CPU cores with native bf16 and three times that
where bf16 is emulated, so streamtune ships the adapter that the default recipe builds
(:data:`SHIPPED_DIR`): when the cache key of a first run equals the shipped one's, and the
shipped bytes match the sha256 beside them, it is used instead of training, then gated
against the seed model like a trained one (seconds). Any other input (another recipe, other
data, another base model) trains as before. ``streamtune bootstrap TASK --rebuild`` trains it
anew on this machine; ``--ship`` also writes it here, for a maintainer who changed an input.
"""

from __future__ import annotations

import hashlib
import logging
import time
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

#: The bootstrap adapters that ship with streamtune: ``<task>.safetensors`` and ``<task>.json``
#: (its cache key, sha256, recipe and how long it took to build).
SHIPPED_DIR = Path(__file__).with_name("shipped")


@dataclass(frozen=True)
class Bootstrap:
    task: str
    version: str  # ``bootstrap-<key prefix>``: the same inputs give the same version
    blob: bytes
    metrics: dict[str, float]
    decision: GateDecision | None  # None when read from the cache
    cached: bool
    shipped: bool = False  # the shipped adapter, verified and gated here, not trained here
    key: str = ""  # the cache key (:func:`cache_key`)


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
    rebuild: bool = False,
    shipped_dir: Path | None = SHIPPED_DIR,
) -> Bootstrap:
    """The task's bootstrap adapter: read from the cache, else the shipped one when it was
    built from exactly these inputs, else trained now (``rebuild``: trained now in any case).

    The gate compares it with the seed model on the task's anchor set, which it never saw.
    Raises ``ValueError`` if it does not beat the seed model (nothing is cached then).
    """
    (texts, labels), _ = split_seed_data(task, data_dir)
    key = cache_key(task, base.model_id, texts, labels, spec, config)
    version, path = cached_file(cache_dir, task, key)
    meta = path.with_suffix(".json")
    if not rebuild and path.exists() and meta.exists():
        metrics = orjson.loads(meta.read_bytes())
        shipped = bool(metrics.get("shipped"))
        return Bootstrap(task, version, path.read_bytes(), metrics, None, True, shipped, key)
    seed = base.seed(task)
    found = None if rebuild or shipped_dir is None else read_shipped(task, key, shipped_dir)
    if found is not None:
        blob, built = found
        log.warning(
            "using the shipped bootstrap adapter of %s (%s, sha256 verified; it took %.0f s "
            "to train where it was built); `streamtune bootstrap %s --rebuild` trains it here",
            task, version, built.get("train_seconds", 0.0), task,
        )  # fmt: skip
    else:
        blob, built = _train(base, task, texts, labels, seed, spec, config, on_progress, path)
    anchor_texts, anchor_labels = anchor_examples(task, data_dir)
    hits = {}
    for name, adapter in (("new", blob), ("seed", seed)):
        predicted = base.predictor(adapter, task=task, version=name).predict(anchor_texts)
        hits[name] = [p.label == y for p, y in zip(predicted, anchor_labels, strict=True)]
    decision = gate.decide(
        hits["new"], hits["seed"], anchor_new=0.0, anchor_live=0.0
    )  # the anchor is the holdout here
    metrics = {**built, "shipped": float(found is not None), **decision.figures}
    if not decision.promote:
        raise ValueError(
            f"the bootstrap adapter of {task} does not beat its seed model: {decision.reason}"
        )
    _write(path, blob)
    _write(meta, orjson.dumps(metrics))
    return Bootstrap(task, version, blob, metrics, decision, False, found is not None, key)


def _train(
    base: LoadedBase, task: str, texts: list[str], labels: list[int], seed: bytes,
    spec: LoraSpec, config: TrainConfig, on_progress: Callable[[Progress], None] | None,
    path: Path,
) -> tuple[bytes, dict[str, float]]:  # fmt: skip
    """Train the adapter: its bytes and how the training went."""
    num_labels = get_task(task).num_labels
    _, head, _ = lora_tensors(seed)
    log.warning(
        "training the bootstrap adapter of %s on %d examples (once; cached in %s)",
        task, len(texts), path.parent,
    )  # fmt: skip
    began = time.perf_counter()
    result = train(
        base.encoder, base.tokenizer, [TaskData(task, num_labels, texts, labels, head)],
        spec=spec, config=config, device=base.device, on_progress=on_progress,
    )  # fmt: skip
    blob = export_task_adapter(
        result.model, task, num_labels=num_labels, base_model_id=base.model_id, spec=spec
    )
    return blob, {
        "train_examples": float(len(texts)),
        "train_examples_per_s": round(result.examples_per_s, 1),
        "epochs_run": float(result.epochs_run),
        "train_seconds": round(time.perf_counter() - began, 1),
    }


def _write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` whole or not at all (a crash leaves no half file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def shipped_files(task: str, directory: Path = SHIPPED_DIR) -> tuple[Path, Path]:
    """The shipped adapter of ``task`` and its record.

    >>> [p.name for p in shipped_files("tfns-sentiment")]
    ['tfns-sentiment.safetensors', 'tfns-sentiment.json']
    """
    return directory / f"{task}.safetensors", directory / f"{task}.json"


#: The numeric figures of a shipped record that a bootstrap's metrics carry.
_SHIPPED_METRICS = ("train_examples", "train_examples_per_s", "epochs_run", "train_seconds")


def read_shipped(
    task: str, key: str, directory: Path = SHIPPED_DIR
) -> tuple[bytes, dict[str, float]] | None:
    """The shipped adapter of ``task`` and its training figures, when it was built from the
    inputs that ``key`` hashes and its bytes match the sha256 of its record; else None (and
    why, in the log). The bytes are safetensors, loaded like any adapter: never unpickled."""
    blob_path, record_path = shipped_files(task, directory)
    if not (blob_path.exists() and record_path.exists()):
        return None
    try:
        record = orjson.loads(record_path.read_bytes())
        built = {name: float(record["metrics"][name]) for name in _SHIPPED_METRICS}
        expected_key, expected_sha = str(record["cache_key"]), str(record["sha256"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring the shipped bootstrap adapter of %s: bad record (%s)", task, exc)
        return None
    if expected_key != key:
        log.info(
            "the shipped bootstrap adapter of %s was built from other inputs (recipe, data or "
            "base model): training one", task,
        )  # fmt: skip
        return None
    blob = blob_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != expected_sha:
        log.warning(
            "ignoring the shipped bootstrap adapter of %s: its bytes do not match the sha256 "
            "of %s", task, record_path,
        )  # fmt: skip
        return None
    return blob, built


def shipped_version(task: str, directory: Path = SHIPPED_DIR) -> str | None:
    """The version of the shipped adapter of ``task`` when its bytes match its record (None
    when none ships, or it does not verify): what ``streamtune doctor`` reports."""
    try:
        key = str(orjson.loads(shipped_files(task, directory)[1].read_bytes())["cache_key"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return cached_file(directory, task, key)[0] if read_shipped(task, key, directory) else None


def write_shipped(
    result: Bootstrap, *, recipe: str, extra: dict[str, object], directory: Path = SHIPPED_DIR
) -> Path:
    """Write ``result`` (trained here, not read) as the shipped adapter of its task, with a
    record of its cache key, sha256, recipe, training figures and ``extra`` (where it was
    built, its accuracy); returns the record's path."""
    if result.shipped or result.cached or not result.key:
        raise ValueError("only an adapter trained in this run can be shipped (use --rebuild)")
    blob_path, record_path = shipped_files(result.task, directory)
    record = {
        "task": result.task,
        "version": result.version,
        "cache_key": result.key,
        "sha256": hashlib.sha256(result.blob).hexdigest(),
        "recipe": recipe,
        "metrics": {name: result.metrics[name] for name in _SHIPPED_METRICS},
        **extra,
    }
    _write(blob_path, result.blob)
    _write(record_path, orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
    return record_path


def evaluate_file(
    base: LoadedBase, blob: bytes, task: str, texts: list[str], labels: list[int]
) -> float:
    """Accuracy of ``blob`` on labelled texts through the serving path."""
    with torch.inference_mode():
        predicted = base.predictor(blob, task=task, version="eval").predict(texts)
    return sum(p.label == y for p, y in zip(predicted, labels, strict=True)) / max(1, len(labels))
