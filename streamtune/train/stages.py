"""The two stages of a train job, run in the trainer's training thread. Each returns
candidates (adapter, figures, gate decision); publishing is the caller's, on the event loop.

1. **Fast head** (seconds): the live model's features of the job's examples, a new head
   fitted on them (``models.head_fit``), gated on the same features. It bridges the time
   until the LoRA adapter is ready.
2. **LoRA** (the gain): LoRA + head trained on the job's examples, warm-started from the live
   adapter, gated through the serving path against whatever is live then (often the
   fast head the first stage just promoted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.artifact import LoraSpec
from models.bootstrap import answer_hits
from models.gate import GateDecision, GateRule
from models.head_fit import Head, fit_head, head_of, out_of_fold_labels, with_head
from models.inference import Predictor
from models.loader import LoadedBase
from models.seed import anchor_examples
from models.training import (
    Progress,
    TaskData,
    TrainConfig,
    export_task_adapter,
    lora_tensors,
    stacks_on,
    train,
)
from schemas.messages import SEED_VERSION
from streamtune.train.reference import carry


@dataclass(frozen=True)
class Live:
    """The adapter a task is served with now (the seed model when none is), and the anchor
    accuracy of its chain's bootstrap: the reference of the gate's anchor floor (None: no
    floor; ``streamtune.train.reference``)."""

    version: str
    blob: bytes
    anchor_reference: float | None = None


@dataclass(frozen=True)
class Candidate:
    """A trained adapter of one task, evaluated and gated, not yet published."""

    task: str
    stage: str  # "head" or "lora"
    version: str
    blob: bytes
    num_labels: int
    metrics: dict[str, float]
    decision: GateDecision


Holdouts = dict[str, tuple[list[str], list[int]]]


class Evaluator:
    """Predictors and anchor features of the live adapters, kept while they stay live."""

    def __init__(self, base: LoadedBase, data_dir: object, anchor_size: int) -> None:
        self.base = base
        self.data_dir = data_dir
        self.anchor_size = anchor_size
        self._live: dict[str, tuple[str, Predictor]] = {}
        self._anchor_features: dict[tuple[str, str], torch.Tensor] = {}

    def anchor(self, task: str) -> tuple[list[str], list[int]]:
        return anchor_examples(task, self.data_dir, self.anchor_size)  # type: ignore[arg-type]

    def live_predictor(self, task: str, live: Live) -> Predictor:
        cached = self._live.get(task)
        if cached is None or cached[0] != live.version:
            self._live[task] = (
                live.version,
                self.base.predictor(live.blob, task=task, version=live.version),
            )
        return self._live[task][1]

    def anchor_features(self, task: str, live: Live) -> torch.Tensor:
        key = (task, live.version)
        if key not in self._anchor_features:
            self._anchor_features = {k: v for k, v in self._anchor_features.items() if k[0] != task}
            self._anchor_features[key] = self.live_predictor(task, live).embed(self.anchor(task)[0])
        return self._anchor_features[key]

    def live_anchor_accuracy(self, task: str, live: Live) -> float:
        """The live adapter's anchor accuracy, from its cached anchor features."""
        features = self.anchor_features(task, live)
        return _accuracy(_hits(_labels(head_of(live.blob), features), self.anchor(task)[1]))

    def anchor_accuracy(self, task: str, blob: bytes, version: str) -> float:
        """Any adapter's anchor accuracy through the serving path (nothing cached)."""
        texts, labels = self.anchor(task)
        return _accuracy(answer_hits(self.base, blob, task, texts, labels, version))


def _hits(predicted: list[int], labels: list[int]) -> list[bool]:
    return [p == y for p, y in zip(predicted, labels, strict=True)]


def _accuracy(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def _labels(head: Head, features: torch.Tensor) -> list[int]:
    return head.logits(features).argmax(-1).tolist()


def fast_head_candidates(
    ev: Evaluator, job_id: str, datasets: list[TaskData], holdouts: Holdouts,
    live: dict[str, Live], rule: GateRule,
) -> list[Candidate]:  # fmt: skip
    """A new head per task on the live encoder's features, gated on the same features."""
    out = []
    for data in datasets:
        task, current = data.task, live[data.task]
        predictor = ev.live_predictor(task, current)
        features = predictor.embed(data.texts)
        held_texts, held_labels = holdouts[task]
        held = predictor.embed(held_texts)
        _, anchor_labels = ev.anchor(task)
        anchor = ev.anchor_features(task, current)
        old = head_of(current.blob)
        new = fit_head(features, data.labels, data.num_labels, prior=old, score_rows=data.fresh)
        new_hits, old_hits = (
            _hits(_labels(new, held), held_labels),
            _hits(_labels(old, held), held_labels),
        )
        # More paired evidence than the holdout's few dozen: cross-fitted answers on the
        # current regime's own examples, against the live head's on the same examples.
        fresh = len(data.labels) if data.fresh is None else data.fresh
        crossed = out_of_fold_labels(
            features, data.labels, data.num_labels, penalty=new.penalty, rows=fresh, prior=old
        )
        if crossed is not None:
            new_hits += _hits(crossed, data.labels[:fresh])
            old_hits += _hits(_labels(old, features[:fresh]), data.labels[:fresh])
        anchor_new = _accuracy(_hits(_labels(new, anchor), anchor_labels))
        anchor_old = _accuracy(_hits(_labels(old, anchor), anchor_labels))
        decision = rule.decide(
            new_hits, old_hits, anchor_new=anchor_new, anchor_live=anchor_old,
            anchor_reference=current.anchor_reference,
        )  # fmt: skip
        metrics = {
            **decision.figures,
            "head_penalty": new.penalty,
            "cross_fitted_examples": 0 if crossed is None else len(crossed),
            "train_examples": len(data.texts),
            **carry(current.anchor_reference, len(anchor_labels)),
        }
        out.append(
            Candidate(task, "head", f"{job_id}-head", with_head(current.blob, new), data.num_labels, metrics, decision)
        )  # fmt: skip
    return out


def train_lora(
    base: LoadedBase, datasets: list[TaskData], live: dict[str, Live], *, spec: LoraSpec,
    config: TrainConfig, warm_start: bool, on_progress: Callable[[Progress], None] | None = None,
) -> tuple[list[bytes], dict[str, float]]:  # fmt: skip
    """LoRA + heads trained on all ``datasets`` together: one adapter blob per dataset, and
    the run's figures. The one training recipe of a LoRA job (the benchmarks' oracle too).

    With ``warm_start``, each head starts from the live adapter's, and where the live LoRA
    stacks (``stacks_on``) the job trains its layers on top of it."""
    primary = live[datasets[0].task]
    lora_init, trained_layers = None, None
    if warm_start and primary.version != SEED_VERSION:
        lora, _, adapter_config = lora_tensors(primary.blob)
        if stacks_on(adapter_config.lora, spec):
            # The live adapter's LoRA, or a bootstrap's on every layer: train the configured
            # layers on top of it and keep its LoRA below them, so the job learns the new data,
            # not the task afresh.
            lora_init, trained_layers, spec = lora, spec.layers, adapter_config.lora
    if warm_start:
        datasets = [
            TaskData(
                d.task, d.num_labels, d.texts, d.labels, lora_tensors(live[d.task].blob)[1], d.fresh
            )
            for d in datasets
        ]
    result = train(
        base.encoder, base.tokenizer, datasets, spec=spec, config=config, device=base.device,
        lora_init=lora_init, trained_layers=trained_layers, on_progress=on_progress,
    )  # fmt: skip
    figures: dict[str, float] = {
        "train_examples_per_s": round(result.examples_per_s, 1),
        "epochs": result.epochs_run,
    }
    blobs = [
        export_task_adapter(
            result.model, d.task, num_labels=d.num_labels, base_model_id=base.model_id, spec=spec
        )
        for d in datasets
    ]
    return blobs, figures


def lora_candidates(
    ev: Evaluator, job_id: str, datasets: list[TaskData], holdouts: Holdouts,
    live: dict[str, Live], rule: GateRule, *, spec: LoraSpec, config: TrainConfig,
    warm_start: bool, on_progress: Callable[[Progress], None], check: Callable[[], None],
) -> tuple[dict[str, float], list[Candidate]]:  # fmt: skip
    """Train LoRA + heads on all tasks of the job together; gate each task's adapter."""
    base = ev.base
    blobs, figures = train_lora(
        base, datasets, live, spec=spec, config=config, warm_start=warm_start,
        on_progress=on_progress,
    )  # fmt: skip
    out = []
    for data, blob in zip(datasets, blobs, strict=True):
        task = data.task
        texts, labels = holdouts[task]
        anchor_texts, anchor_labels = ev.anchor(task)
        check()  # evaluation takes seconds: drop a stale job before it
        new = base.predictor(blob, task=task, version="candidate")
        predicted = [p.label for p in new.predict(texts + anchor_texts)]
        new_hits = _hits(predicted[: len(texts)], labels)
        anchor_new = _accuracy(_hits(predicted[len(texts) :], anchor_labels))
        old = ev.live_predictor(task, live[task])
        old_hits = _hits([p.label for p in old.predict(texts)], labels)
        # The live model's anchor answers come from its cached anchor features.
        anchor_old = ev.live_anchor_accuracy(task, live[task])
        reference = live[task].anchor_reference
        decision = rule.decide(
            new_hits, old_hits, anchor_new=anchor_new, anchor_live=anchor_old,
            anchor_reference=reference,
        )  # fmt: skip
        version = job_id if len(datasets) == 1 else f"{job_id}.{task}"
        metrics = {
            **decision.figures,
            "train_examples": len(data.texts),
            **figures,
            **carry(reference, len(anchor_labels)),
        }
        out.append(Candidate(task, "lora", version, blob, data.num_labels, metrics, decision))
    return figures, out
