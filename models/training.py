"""Train LoRA adapters: one shared LoRA on the encoder, one head per task.

A single-task job is the one-head case. A multi-task job trains the tasks together (batches
alternate between tasks) and yields one adapter per task that shares the LoRA weights, so
each task's adapter stays in the serving format: LoRA tensors plus that task's head.

Training is AdamW with a one-cycle learning rate, length-bucketed batches (little padding),
bf16 autocast where the hardware has it, optional class weights, and early stopping on a
validation split, keeping the best epoch. It is deterministic for a given seed.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.artifact import AdapterConfig, LoraSpec, pack, unpack
from models.lora import library_versions
from models.metrics import accuracy, macro_f1

HEAD_KEYS = ("base_model.model.head.weight", "base_model.model.head.bias")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults suit the MiniLM-L6 base on a CPU."""

    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    max_length: int = 64
    seed: int = 0
    class_weighted: bool = False
    validation_fraction: float = 0.1
    patience: int = 1
    bf16: bool = True


@dataclass
class TaskData:
    """Examples of one task: training texts/labels and (optionally) a head to start from."""

    task: str
    num_labels: int
    texts: list[str]
    labels: list[int]
    head: dict[str, torch.Tensor] | None = None  # {"weight", "bias"}


@dataclass(frozen=True)
class Progress:
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    examples_per_s: float


@dataclass
class TrainResult:
    model: PeftModel
    spec: LoraSpec
    tasks: list[str]
    validation: dict[str, dict[str, float]] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int = 0
    examples_per_s: float = 0.0
    trainable_params: int = 0


class MultiTaskClassifier(nn.Module):
    """Encoder + mean pooling + one linear head per task."""

    def __init__(
        self, encoder: PreTrainedModel, heads: dict[str, int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict(
            {_slot(t): nn.Linear(encoder.config.hidden_size, n) for t, n in heads.items()}
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str
    ) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.heads[_slot(task)](self.dropout(pooled))


def _slot(task: str) -> str:
    return task.replace("-", "_")


def lora_tensors(
    blob: bytes,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], AdapterConfig]:
    """Split an adapter blob into (LoRA tensors, head {"weight","bias"}, config)."""
    tensors, config = unpack(blob)
    head = {"weight": tensors[HEAD_KEYS[0]], "bias": tensors[HEAD_KEYS[1]]}
    lora = {k: v for k, v in tensors.items() if k not in HEAD_KEYS}
    return lora, head, config


def build_model(
    encoder: PreTrainedModel,
    tasks: list[TaskData],
    spec: LoraSpec,
    lora_init: dict[str, torch.Tensor] | None = None,
) -> PeftModel:
    """The trainable model: LoRA on a private copy of the encoder, heads trainable too."""
    base = MultiTaskClassifier(copy.deepcopy(encoder), {t.task: t.num_labels for t in tasks})
    for data in tasks:
        if data.head is not None:
            head = base.heads[_slot(data.task)]
            head.weight.data.copy_(data.head["weight"])
            head.bias.data.copy_(data.head["bias"])
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(spec.target_modules),
    )
    model = get_peft_model(base, config)
    if lora_init is not None:
        set_peft_model_state_dict(model, lora_init)
    for param in model.base_model.model.heads.parameters():
        param.requires_grad = True  # heads train at full rank
    return model


def export_task_adapter(
    model: PeftModel, task: str, *, num_labels: int, base_model_id: str, spec: LoraSpec
) -> bytes:
    """One task's adapter in the serving format: the shared LoRA tensors plus its head."""
    lora = {k: v for k, v in get_peft_model_state_dict(model).items() if ".heads." not in k}
    head = model.base_model.model.heads[_slot(task)]
    tensors = {**lora, HEAD_KEYS[0]: head.weight.detach(), HEAD_KEYS[1]: head.bias.detach()}
    config = AdapterConfig(
        task=task,
        num_labels=num_labels,
        base_model_id=base_model_id,
        hidden_size=model.base_model.model.encoder.config.hidden_size,
        lora=spec,
        library_versions=library_versions(),
    )
    return pack(tensors, config)


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    dtype = torch.bfloat16
    if device.type == "cpu":
        enabled = enabled and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


@torch.no_grad()
def predict_labels(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, task: str, texts: list[str], *,
    device: torch.device, max_length: int = 64, bf16: bool = True, batch: int = 128,
) -> list[int]:  # fmt: skip
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [0] * len(texts)
    with _autocast(device, bf16):
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            enc = tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits = model(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                task=task,
            )
            for i, label in zip(chunk, logits.argmax(-1).tolist(), strict=True):
                out[i] = label
    model.train(was_training)
    return out


def _split(data: TaskData, fraction: float, rng: random.Random) -> tuple[TaskData, TaskData | None]:
    n = len(data.texts)
    held = int(n * fraction)
    if fraction <= 0 or held < 20 or n - held < 20:
        return data, None
    index = list(range(n))
    rng.shuffle(index)
    val, train = sorted(index[:held]), sorted(index[held:])

    def pick(idx: list[int]) -> TaskData:
        texts = [data.texts[i] for i in idx]
        return TaskData(data.task, data.num_labels, texts, [data.labels[i] for i in idx], data.head)

    return pick(train), pick(val)


def _batches(data: TaskData, size: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort within pools of 50 batches, shuffle the batches."""
    index = list(range(len(data.texts)))
    rng.shuffle(index)
    pool = size * 50
    batches = []
    for start in range(0, len(index), pool):
        chunk = sorted(index[start : start + pool], key=lambda i: len(data.texts[i]))
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches


def train(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[TaskData],
    *,
    spec: LoraSpec,
    config: TrainConfig,
    device: torch.device,
    lora_init: dict[str, torch.Tensor] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train LoRA + heads on ``tasks``; returns the best epoch's model (by validation macro-F1)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)  # noqa: S311 - shuffling, not secrets
    splits = [_split(t, config.validation_fraction, rng) for t in tasks]
    train_sets = [s[0] for s in splits]
    model = build_model(encoder, tasks, spec, lora_init).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(
        model, spec, [t.task for t in tasks], trainable_params=sum(p.numel() for p in params)
    )
    weights = {}
    for data in train_sets:
        if config.class_weighted:
            counts = (
                torch.bincount(torch.tensor(data.labels), minlength=data.num_labels)
                .float()
                .clamp(min=1)
            )
            weights[data.task] = (counts.sum() / (data.num_labels * counts)).to(device)
    steps_per_epoch = sum(math.ceil(len(d.texts) / config.batch_size) for d in train_sets)
    total = max(1, steps_per_epoch * config.epochs)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=config.learning_rate,
        total_steps=total,
        pct_start=0.1,
        anneal_strategy="linear",
    )
    best_score, best_state, stale = -1.0, None, 0
    step, seen, began = 0, 0, time.perf_counter()
    model.train()
    for epoch in range(config.epochs):
        # Interleave the tasks' batches so a multi-task job sees every task throughout.
        plan = [(d, b) for d in train_sets for b in _batches(d, config.batch_size, rng)]
        rng.shuffle(plan)
        for data, batch in plan:
            enc = tokenizer(
                [data.texts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=config.max_length,
                return_tensors="pt",
            )
            target = torch.tensor([data.labels[i] for i in batch], device=device)
            with _autocast(device, config.bf16):
                logits = model(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    task=data.task,
                )
            loss = nn.functional.cross_entropy(
                logits.float(), target, weight=weights.get(data.task)
            )
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            seen += len(batch)
            if on_progress is not None:
                on_progress(
                    Progress(
                        epoch,
                        config.epochs,
                        step,
                        total,
                        loss.item(),
                        seen / (time.perf_counter() - began),
                    )
                )
        result.epochs_run = epoch + 1
        scores = {}
        for (_, val), data in zip(splits, tasks, strict=True):
            if val is None:
                continue
            predicted = predict_labels(
                model,
                tokenizer,
                data.task,
                val.texts,
                device=device,
                max_length=config.max_length,
                bf16=config.bf16,
            )
            scores[data.task] = {
                "val_accuracy": accuracy(val.labels, predicted),
                "val_macro_f1": macro_f1(val.labels, predicted, data.num_labels),
            }
        if not scores:  # too little data to validate: keep the last epoch
            continue
        score = sum(s["val_macro_f1"] for s in scores.values()) / len(scores)
        if score > best_score:
            best_score, stale = score, 0
            best_state = {
                k: v.detach().clone()
                for k, v in model.state_dict().items()
                if "lora_" in k or ".heads." in k
            }
            result.validation, result.best_epoch = scores, epoch + 1
        else:
            stale += 1
            if stale > config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    result.examples_per_s = seen / max(1e-9, time.perf_counter() - began)
    return result


def train_adapter(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    texts: list[str],
    labels: list[int],
    *,
    num_labels: int,
    base_model_id: str,
    spec: LoraSpec,
    config: TrainConfig,
    device: torch.device | None = None,
) -> bytes:
    """Train one task's adapter and return it in the serving format."""
    result = train(
        encoder, tokenizer, [TaskData(task, num_labels, texts, labels)], spec=spec, config=config,
        device=device or torch.device("cpu"),
    )  # fmt: skip
    return export_task_adapter(
        result.model, task, num_labels=num_labels, base_model_id=base_model_id, spec=spec
    )
