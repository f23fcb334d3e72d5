"""Train LoRA adapters: one shared LoRA on the encoder, one head per task.

A single-task job is the one-head case. A multi-task job trains the tasks together (batches
alternate between tasks) and yields one adapter per task that shares the LoRA weights, so
each task's adapter stays in the serving format: LoRA tensors plus that task's head.

Training is AdamW with a one-cycle learning rate, length-bucketed batches (little padding),
bf16 autocast where the hardware has it, optional class weights, and early stopping on a
validation split, keeping the best epoch. It is deterministic for a given seed.

When LoRA adapts only the top layers (``LoraSpec.layers``), the layers below are frozen: their
output for each example is the same in every epoch. It is computed once per job (the
*frozen prefix*) and each step runs only the adapted layers, forward and backward. On a CPU
that is where most of the time went.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from peft import (
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.artifact import AdapterConfig, LoraSpec, pack, unpack
from models.batching import length_sorted_batches, pad, token_ids
from models.classifier import mean_pool
from models.device import autocast
from models.lora import library_versions, lora_config
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
    """Examples of one task: training texts/labels and (optionally) a head to start from.

    ``fresh``: how many of the examples, from the start, are of the current regime (the rest
    are rehearsal of older data); None when they all are."""

    task: str
    num_labels: int
    texts: list[str]
    labels: list[int]
    head: dict[str, torch.Tensor] | None = None  # {"weight", "bias"}
    fresh: int | None = None


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
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task: str,
        prefix: tuple[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits; with ``prefix=(k, hidden)`` the layers below ``k`` are skipped and ``hidden``
        (their output for this batch) goes into layer ``k``."""
        if prefix is None:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        else:
            with layer_window(self.encoder, prefix[0], None, replace_input=prefix[1]):
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = mean_pool(hidden.last_hidden_state, attention_mask)
        return self.heads[_slot(task)](self.dropout(pooled))


def _slot(task: str) -> str:
    return task.replace("-", "_")


def _layer_list(encoder: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The encoder's stack of transformer layers: (its parent, attribute name, the list)."""
    count = encoder.config.num_hidden_layers
    for module in encoder.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == count:
                return module, name, child
    raise ValueError(f"no stack of {count} layers found in {type(encoder).__name__}")


@contextlib.contextmanager
def layer_window(
    encoder: nn.Module, start: int, stop: int | None, replace_input: torch.Tensor | None = None
) -> Iterator[None]:
    """Run only layers ``start:stop`` of ``encoder`` inside the block; with ``replace_input``,
    the stack receives that tensor instead of the embeddings (the frozen prefix's output).

    Works on any Hugging Face encoder whose layers sit in one ``nn.ModuleList``; the
    attention mask is still built by the model itself from ``attention_mask``."""
    parent, name, layers = _layer_list(encoder)
    handle = None
    if replace_input is not None:

        def swap(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (replace_input, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": replace_input}

        handle = parent.register_forward_pre_hook(swap, with_kwargs=True)
    setattr(parent, name, nn.ModuleList(list(layers)[start:stop]))
    try:
        yield
    finally:
        setattr(parent, name, layers)
        if handle is not None:
            handle.remove()


def lora_tensors(
    blob: bytes,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], AdapterConfig]:
    """Split an adapter blob into (LoRA tensors, head {"weight","bias"}, config)."""
    tensors, config = unpack(blob)
    head = {"weight": tensors[HEAD_KEYS[0]], "bias": tensors[HEAD_KEYS[1]]}
    lora = {k: v for k, v in tensors.items() if k not in HEAD_KEYS}
    return lora, head, config


_LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The index of the encoder layer a parameter belongs to (None: outside the layers).

    >>> layer_of("base_model.model.encoder.encoder.layer.4.attention.self.query.lora_A.default.weight")
    4
    >>> layer_of("base_model.model.heads.tfns_sentiment.weight") is None
    True
    """
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def stacks_on(live: LoraSpec, job: LoraSpec) -> bool:
    """Whether a job configured with ``job`` can train on top of an adapter built with ``live``:
    the same LoRA, on the same layers or on more (a bootstrap adapts them all). The job then
    keeps ``live``'s spec and trains only ``job``'s layers; the LoRA below them stays as the
    live adapter has it.

    >>> stacks_on(LoraSpec(layers=None), LoraSpec(layers=(4, 5))), stacks_on(LoraSpec(), LoraSpec())
    (True, True)
    >>> stacks_on(LoraSpec(layers=(4, 5)), LoraSpec(layers=None)), stacks_on(LoraSpec(r=8), LoraSpec())
    (False, False)
    """
    if live == job:
        return True
    if job.layers is None or dataclasses.replace(live, layers=job.layers) != job:
        return False
    return live.layers is None or set(job.layers) <= set(live.layers)


def top_layers(encoder: PreTrainedModel, count: int) -> tuple[int, ...] | None:
    """The indices of the top ``count`` layers (None: all of them).

    >>> from types import SimpleNamespace
    >>> top_layers(SimpleNamespace(config=SimpleNamespace(num_hidden_layers=6)), 2)
    (4, 5)
    """
    total = encoder.config.num_hidden_layers
    if count <= 0 or count >= total:
        return None
    return tuple(range(total - count, total))


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
    model = get_peft_model(base, lora_config(spec))
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


def warmup_then_decay(total: int, warmup: float = 0.1) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over ``warmup`` of the steps (at least
    one), then linear decay to zero; well defined for any number of steps.

    >>> f = warmup_then_decay(10)
    >>> [round(f(s), 2) for s in (0, 1, 5, 9)]
    [1.0, 1.0, 0.56, 0.11]
    """
    ramp = max(1, round(warmup * total))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return max(0.0, (total - step) / max(1, total - ramp))

    return factor


class FrozenPrefix:
    """The output of the frozen layers below the first adapted one, per example, computed
    once per job. ``batch(indices)`` pads a batch of them for the adapted layers."""

    def __init__(
        self,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        ids: list[list[int]],
        first_adapted: int,
        device: torch.device,
        bf16: bool,
    ) -> None:
        self.first = first_adapted
        self.device = device
        self.tokenizer = tokenizer
        self.ids = ids
        self.hidden: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        encoder = model.base_model.model.encoder
        was_training = encoder.training
        encoder.eval()  # no dropout: the prefix stands for every epoch's pass through them
        with torch.inference_mode(), autocast(device, bf16), layer_window(encoder, 0, self.first):
            for chunk, enc in length_sorted_batches(tokenizer, [], 128, ids=ids):
                mask = enc["attention_mask"]
                out = encoder(
                    input_ids=enc["input_ids"].to(device), attention_mask=mask.to(device)
                ).last_hidden_state
                for row, index in enumerate(chunk):
                    self.hidden[index] = out[row, : int(mask[row].sum())].clone()
        encoder.train(was_training)

    def batch(self, indices: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        enc = pad(self.tokenizer, [self.ids[i] for i in indices])
        hidden = nn.utils.rnn.pad_sequence([self.hidden[i] for i in indices], batch_first=True)
        return enc, hidden.to(self.device)


class _Examples:
    """All examples of a job, tokenised once; each task's train and validation indices."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        self.ids: list[list[int]] = []
        self.labels: list[int] = []

    def add(self, texts: list[str], labels: list[int]) -> list[int]:
        start = len(self.ids)
        self.ids += token_ids(self.tokenizer, texts, self.max_length) if texts else []
        self.labels += labels
        return list(range(start, len(self.ids)))


@torch.no_grad()
def predict_labels(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, task: str, texts: list[str], *,
    device: torch.device, max_length: int = 64, bf16: bool = True, batch: int = 128,
) -> list[int]:  # fmt: skip
    """The trained model's labels for ``texts`` (a full forward pass)."""
    was_training = model.training
    model.eval()
    out = [0] * len(texts)
    with autocast(device, bf16):
        for chunk, enc in length_sorted_batches(tokenizer, texts, batch, max_length):
            logits = model(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                task=task,
            )
            for i, label in zip(chunk, logits.argmax(-1).tolist(), strict=True):
                out[i] = label
    model.train(was_training)
    return out


def _split(n: int, fraction: float, rng: random.Random) -> tuple[list[int], list[int]]:
    """(train, validation) positions; no validation when either side would be tiny."""
    held = int(n * fraction)
    if fraction <= 0 or held < 20 or n - held < 20:
        return list(range(n)), []
    index = list(range(n))
    rng.shuffle(index)
    return sorted(index[held:]), sorted(index[:held])


def _batches(
    indices: list[int], lengths: list[int], size: int, rng: random.Random
) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort within pools of 50 batches, shuffle the batches."""
    index = list(indices)
    rng.shuffle(index)
    pool = size * 50
    batches = []
    for start in range(0, len(index), pool):
        chunk = sorted(index[start : start + pool], key=lambda i: lengths[i])
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
    trained_layers: tuple[int, ...] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> TrainResult:
    """Train LoRA + heads on ``tasks``; returns the best epoch's model (by validation macro-F1).

    ``trained_layers``: train the LoRA of only these layers (None: every layer ``spec``
    adapts). LoRA on the layers below them keeps its ``lora_init`` weights and runs in the
    frozen prefix: that is how an online job trains the top layers of a bootstrap adapter
    that adapts every layer (``stacks_on``)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)  # noqa: S311 - shuffling, not secrets
    began = time.perf_counter()
    examples = _Examples(tokenizer, config.max_length)
    train_idx: dict[str, list[int]] = {}
    val_idx: dict[str, list[int]] = {}
    for data in tasks:
        rows = examples.add(data.texts, data.labels)
        tr, va = _split(len(rows), config.validation_fraction, rng)
        train_idx[data.task] = [rows[i] for i in tr]
        val_idx[data.task] = [rows[i] for i in va]
    lengths = [len(ids) for ids in examples.ids]
    model = build_model(encoder, tasks, spec, lora_init).to(device)
    trained = spec.layers if trained_layers is None else trained_layers
    if trained_layers is not None:
        if spec.layers is not None and not set(trained_layers) <= set(spec.layers):
            raise ValueError(f"layers {trained_layers} are not all adapted by {spec.layers}")
        for name, param in model.named_parameters():
            layer = layer_of(name)
            if "lora_" in name and layer is not None and layer not in trained_layers:
                param.requires_grad = False
    first = min(trained) if trained else 0
    prefix = (
        FrozenPrefix(model, tokenizer, examples.ids, first, device, config.bf16) if first else None
    )
    params = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(
        model, spec, [t.task for t in tasks], trainable_params=sum(p.numel() for p in params)
    )
    weights = {}
    if config.class_weighted:
        for data in tasks:
            counts = torch.bincount(
                torch.tensor([examples.labels[i] for i in train_idx[data.task]], dtype=torch.long),
                minlength=data.num_labels,
            )
            counts = counts.float().clamp(min=1)
            weights[data.task] = (counts.sum() / (data.num_labels * counts)).to(device)

    def logits_of(task: str, batch: list[int]) -> torch.Tensor:
        if prefix is not None:
            enc, hidden = prefix.batch(batch)
            return model(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                task=task,
                prefix=(first, hidden),
            )
        enc = pad(tokenizer, [examples.ids[i] for i in batch])
        return model(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device),
            task=task,
        )

    steps_per_epoch = sum(math.ceil(len(v) / config.batch_size) for v in train_idx.values())
    total = max(1, steps_per_epoch * config.epochs)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_then_decay(total))
    best_score, best_state, stale = -1.0, None, 0
    step, seen = 0, 0
    model.train()
    for epoch in range(config.epochs):
        # Interleave the tasks' batches so a multi-task job sees every task throughout.
        plan = [
            (data, b)
            for data in tasks
            for b in _batches(train_idx[data.task], lengths, config.batch_size, rng)
        ]
        rng.shuffle(plan)
        for data, batch in plan:
            target = torch.tensor([examples.labels[i] for i in batch], device=device)
            with autocast(device, config.bf16):
                logits = logits_of(data.task, batch)
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
        scores = _validate(model, tasks, val_idx, examples, logits_of, device, config.bf16)
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


@torch.no_grad()
def _validate(
    model: PeftModel,
    tasks: list[TaskData],
    val_idx: dict[str, list[int]],
    examples: _Examples,
    logits_of: Callable[[str, list[int]], torch.Tensor],
    device: torch.device,
    bf16: bool,
) -> dict[str, dict[str, float]]:
    model.eval()
    scores = {}
    for data in tasks:
        rows = val_idx[data.task]
        if not rows:
            continue
        predicted: list[int] = []
        for start in range(0, len(rows), 128):
            with autocast(device, bf16):
                predicted += logits_of(data.task, rows[start : start + 128]).argmax(-1).tolist()
        truth = [examples.labels[i] for i in rows]
        scores[data.task] = {
            "val_accuracy": accuracy(truth, predicted),
            "val_macro_f1": macro_f1(truth, predicted, data.num_labels),
        }
    model.train()
    return scores


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
