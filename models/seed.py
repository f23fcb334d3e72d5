"""The seed model of a task: the base encoder with a linear head fitted on the task's seed data.

Before any adapter is trained, a consumer still needs a head to answer with. The seed head
is a linear probe on frozen mean-pooled embeddings of a fixed sample of the task's seed
data: deterministic, so every replica computes the same one, and cached on disk as an
ordinary (unsigned, never transmitted) adapter artifact whose LoRA weights are zero.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.artifact import LoraSpec
from models.batching import length_sorted_batches
from models.lora import export_adapter, new_peft_classifier
from schemas.tasks import get_task
from streamtune.core.errors import ConfigError

log = logging.getLogger(__name__)

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
#: Seed data per task: (file, text column, label column). Labels may be names or indices.
SEED_FILES = {
    "tfns-sentiment": ("tfns/train.csv", "text", "label"),
    "banking77-intent": ("banking77/train.csv", "text", "category"),
}
#: Rows of each seed file set aside as the task's anchor set: the gate's guard against
#: forgetting. They are never trained on, and no scenario, test or benchmark replays them
#: (those replay the tasks' *other* files: TFNS valid, BANKING77 test, the surge sets).
ANCHOR_ROWS = 600
SEED_SAMPLE = 2000


def _read(task: str, data_dir: Path) -> tuple[list[str], list[int]]:
    spec = get_task(task)
    if task not in SEED_FILES:
        raise ConfigError(f"no seed data is known for task {task!r}")
    name, text_col, label_col = SEED_FILES[task]
    path = data_dir / name
    if not path.exists():
        raise ConfigError(
            f"seed data {path} is missing; set STREAMTUNE_DATA_DIR to the folder holding it"
        )
    texts, labels = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            raw = row[label_col]
            texts.append(row[text_col])
            labels.append(int(raw) if raw.isdigit() else spec.label_index(raw))
    return texts, labels


def split_seed_data(
    task: str, data_dir: Path = REPO_DATA
) -> tuple[tuple[list[str], list[int]], tuple[list[str], list[int]]]:
    """``(training part, anchor part)`` of the task's seed file: a fixed, seeded split.

    >>> (train, _), (anchor, _) = split_seed_data("tfns-sentiment")
    >>> len(anchor), len(set(train) & set(anchor)) < 5  # the file repeats a few tweets
    (600, True)
    """
    texts, labels = _read(task, data_dir)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)  # noqa: S311 - a fixed split, not a secret
    anchor, rest = sorted(order[:ANCHOR_ROWS]), sorted(order[ANCHOR_ROWS:])
    return (
        ([texts[i] for i in rest], [labels[i] for i in rest]),
        ([texts[i] for i in anchor], [labels[i] for i in anchor]),
    )


def seed_examples(
    task: str, data_dir: Path = REPO_DATA, limit: int | None = SEED_SAMPLE
) -> tuple[list[str], list[int]]:
    """A fixed, seeded sample of the task's seed data (never the anchor rows)."""
    (texts, labels), _ = split_seed_data(task, data_dir)
    if limit is not None and len(texts) > limit:
        picked = sorted(random.Random(0).sample(range(len(texts)), limit))  # noqa: S311 - sampling
        texts, labels = [texts[i] for i in picked], [labels[i] for i in picked]
    return texts, labels


def anchor_examples(
    task: str, data_dir: Path = REPO_DATA, limit: int | None = ANCHOR_ROWS
) -> tuple[list[str], list[int]]:
    """The task's anchor set (the first ``limit`` of its anchor rows)."""
    _, (texts, labels) = split_seed_data(task, data_dir)
    return texts[:limit], labels[:limit]


@torch.no_grad()  # not inference_mode: the result feeds autograd in fit_linear_head
def embed_texts(
    encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch: int = 64
) -> torch.Tensor:
    """Mean-pooled embeddings, (len(texts), hidden)."""
    from models.classifier import TextClassifier

    probe = TextClassifier(encoder, 1).eval()
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for chunk, enc in length_sorted_batches(tokenizer, texts, batch, max_length=128):
        out[chunk] = probe.embed(enc["input_ids"], enc["attention_mask"])
    return out


def fit_linear_head(
    features: torch.Tensor, labels: list[int], num_labels: int, steps: int = 300
) -> torch.nn.Linear:
    """Multinomial logistic regression by full-batch Adam; deterministic."""
    torch.manual_seed(0)
    head = torch.nn.Linear(features.shape[1], num_labels)
    target = torch.tensor(labels)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), target)
        loss.backward()
        optimiser.step()
    return head


def seed_adapter(
    task: str,
    *,
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    base_model_id: str,
    cache_dir: Path,
    data_dir: Path = REPO_DATA,
) -> bytes:
    """The seed adapter blob for ``task``, computed once and cached."""
    texts, labels = seed_examples(task, data_dir)
    digest = hashlib.sha256(
        "\n".join(f"{label}\t{text}" for text, label in zip(texts, labels, strict=True)).encode()
    )
    key = f"{task}-{base_model_id}-{digest.hexdigest()[:12]}"
    path = cache_dir / "seed" / f"{key}.safetensors"
    if path.exists():
        return path.read_bytes()
    log.warning(
        "fitting the seed head of %s on %d examples (once; cached in %s)", task, len(texts), path
    )
    features = embed_texts(encoder, tokenizer, texts)
    head = fit_linear_head(features, labels, get_task(task).num_labels)
    spec = LoraSpec()
    model = new_peft_classifier(encoder, get_task(task).num_labels, spec, head=head)
    blob = export_adapter(model, task=task, base_model_id=base_model_id, spec=spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return blob
