"""Train a LoRA adapter for one task: AdamW over the LoRA weights and the head.

A deliberately plain loop: dynamic padding, a seeded shuffle, optional class weights.
The trainer worker builds on it (early stopping, evaluation, gating).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.adapter import new_peft_classifier
from models.artifact import LoraSpec


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 0
    class_weighted: bool = False


def train_lora(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    labels: list[int],
    *,
    num_labels: int,
    spec: LoraSpec | None = None,
    config: TrainConfig | None = None,
    head: torch.nn.Linear | None = None,
) -> PeftModel:
    """A LoRA classifier trained on (texts, labels); ``encoder`` itself is not modified."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)  # noqa: S311 - shuffling, not secrets
    model = new_peft_classifier(encoder, num_labels, spec, head=head)
    model.train()
    weights = None
    if config.class_weighted:
        counts = torch.bincount(torch.tensor(labels), minlength=num_labels).float().clamp(min=1)
        weights = counts.sum() / (num_labels * counts)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    order = list(range(len(texts)))
    for _ in range(config.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            chunk = order[start : start + config.batch_size]
            batch = tokenizer(
                [texts[i] for i in chunk], padding=True, truncation=True,
                max_length=config.max_length, return_tensors="pt",
            )  # fmt: skip
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(
                logits, torch.tensor([labels[i] for i in chunk]), weight=weights
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return model
