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

#: The sha256 of each shipped adapter, pinned here, in reviewed code, and not only in the
#: record beside it: whoever can swap the file cannot make it pass by editing the record too.
#: ``streamtune bootstrap TASK --rebuild --ship`` prints the new value to paste here.
SHIPPED_SHA256 = {
    "tfns-sentiment": "667cb82c86febe62bcbf128b0e82fcf2db92ebeb2915847e11f7126a7ca38213",
}


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
    built from exactly these inputs, else trained now and cached.

    ``rebuild`` trains it now whatever the cache or the shipped copy hold, and caches nothing:
    it is the check that the recipe still gives what is shipped or cached (whose bytes keep
    that version's name, so that one version never names two blobs).

    The gate compares it with the seed model on the task's anchor set, which it never saw; a
    shipped adapter that fails it is trained around. Raises ``ValueError`` if a trained one
    does not beat the seed model (nothing is cached then).
    """
    (texts, labels), _ = split_seed_data(task, data_dir)
    key = cache_key(task, base.model_id, texts, labels, spec, config)
    version, path = cached_file(cache_dir, task, key)
    cached = None if rebuild else read_cached(path)
    if cached is not None:
        blob, metrics = cached
        shipped = bool(metrics.get("shipped"))
        return Bootstrap(task, version, blob, metrics, None, True, shipped, key)
    seed = base.seed(task)
    found = None if rebuild or shipped_dir is None else read_shipped(task, key, shipped_dir)
    decision = None
    if found is not None:
        blob, built = found
        decision = _gate(base, task, data_dir, gate, blob, seed)
        if decision.promote:
            log.warning(
                "using the shipped bootstrap adapter of %s (%s, sha256 verified, gated; it "
                "took %.0f s to train where it was built)",
                task, version, built.get("train_seconds", 0.0),
            )  # fmt: skip
        else:
            log.warning(
                "the shipped bootstrap adapter of %s does not beat the seed model here (%s): "
                "training one", task, decision.reason,
            )  # fmt: skip
            found = None
    if found is None:
        blob, built = _train(base, task, texts, labels, seed, spec, config, on_progress, path)
        decision = _gate(base, task, data_dir, gate, blob, seed)
    assert decision is not None  # noqa: S101 - set on both paths above
    metrics = {**built, "shipped": float(found is not None), **decision.figures}
    if not decision.promote:
        raise ValueError(
            f"the bootstrap adapter of {task} does not beat its seed model: {decision.reason}"
        )
    if not rebuild:
        _write(path, blob)
        _write(path.with_suffix(".json"), orjson.dumps({"sha256": _sha256(blob), **metrics}))
    return Bootstrap(task, version, blob, metrics, decision, False, found is not None, key)


def _gate(
    base: LoadedBase, task: str, data_dir: Path, gate: GateRule, blob: bytes, seed: bytes
) -> GateDecision:
    """``blob`` against the seed model on the task's anchor set (its holdout here)."""
    texts, labels = anchor_examples(task, data_dir)
    new, old = (
        answer_hits(base, b, task, texts, labels, name)
        for name, b in (("new", blob), ("seed", seed))
    )
    return gate.decide(new, old, anchor_new=0.0, anchor_live=0.0)


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def read_cached(path: Path) -> tuple[bytes, dict[str, float]] | None:
    """The cached adapter at ``path`` and its metrics (``.json`` beside it), when its bytes
    match the sha256 recorded there; None when absent, unreadable or altered (logged: it is
    then built again). A cache written before the sha256 was recorded is adopted as is."""
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    try:
        blob, record = path.read_bytes(), orjson.loads(meta.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("ignoring the cached bootstrap adapter %s: %s", path, exc)
        return None
    if not isinstance(record, dict):
        log.warning("ignoring the cached bootstrap adapter %s: its record is not an object", path)
        return None
    expected = record.pop("sha256", None)
    if expected is None:  # an older cache: record the sha256 of what it holds from now on
        _write(meta, orjson.dumps({"sha256": _sha256(blob), **record}))
    elif expected != _sha256(blob):
        log.warning(
            "ignoring the cached bootstrap adapter %s: its bytes do not match the sha256 "
            "recorded beside them", path,
        )  # fmt: skip
        return None
    return blob, record


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
    task: str, key: str, directory: Path = SHIPPED_DIR, pinned: dict[str, str] | None = None
) -> tuple[bytes, dict[str, float]] | None:
    """The shipped adapter of ``task`` and its training figures, when it was built from the
    inputs that ``key`` hashes and its bytes match the sha256 of its record, which must be
    the one ``pinned`` (default :data:`SHIPPED_SHA256`) names; else None (and why, in the
    log). The bytes are safetensors, loaded like any adapter: never unpickled."""
    blob_path, record_path = shipped_files(task, directory)
    if not (blob_path.exists() and record_path.exists()):
        return None
    try:
        record = orjson.loads(record_path.read_bytes())
        built = {name: float(record["metrics"][name]) for name in _SHIPPED_METRICS}
        expected_key, expected_sha = str(record["cache_key"]), str(record["sha256"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring the shipped bootstrap adapter of %s: bad record (%s)", task, exc)
        return None
    if expected_sha != (SHIPPED_SHA256 if pinned is None else pinned).get(task):
        log.warning(
            "ignoring the shipped bootstrap adapter of %s: its record's sha256 is not the one "
            "pinned in models.bootstrap.SHIPPED_SHA256", task,
        )  # fmt: skip
        return None
    if expected_key != key:
        log.info(
            "the shipped bootstrap adapter of %s was built from other inputs (recipe, data or "
            "base model): training one", task,
        )  # fmt: skip
        return None
    try:
        blob = blob_path.read_bytes()
    except OSError as exc:
        log.warning("ignoring the shipped bootstrap adapter of %s: %s", task, exc)
        return None
    if _sha256(blob) != expected_sha:
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
        "sha256": _sha256(result.blob),
        "recipe": recipe,
        "metrics": {name: result.metrics[name] for name in _SHIPPED_METRICS},
        **extra,
    }
    _write(blob_path, result.blob)
    _write(record_path, orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
    return record_path


def answer_hits(
    base: LoadedBase, blob: bytes, task: str, texts: list[str], labels: list[int],
    version: str = "eval",
) -> list[bool]:  # fmt: skip
    """Whether ``blob`` answers each labelled text right, through the serving path: the one
    way the bootstrap, the trainer's gate and the benchmarks score an adapter."""
    with torch.inference_mode():
        predicted = base.predictor(blob, task=task, version=version).predict(texts)
    return [p.label == y for p, y in zip(predicted, labels, strict=True)]


def evaluate_file(
    base: LoadedBase, blob: bytes, task: str, texts: list[str], labels: list[int]
) -> float:
    """Accuracy of ``blob`` on labelled texts through the serving path."""
    hits = answer_hits(base, blob, task, texts, labels)
    return sum(hits) / max(1, len(hits))
