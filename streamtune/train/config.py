"""The trainer's LoRA spec and training config, from the settings: one place, so that the
trainer, the bootstrap and the benchmarks train exactly alike."""

from __future__ import annotations

from transformers import PreTrainedModel

from models.artifact import LoraSpec
from models.gate import GateRule
from models.training import TrainConfig, top_layers
from streamtune.core.settings import Settings


def lora_spec(settings: Settings, encoder: PreTrainedModel, layers: int | None = None) -> LoraSpec:
    """LoRA as configured (``STREAMTUNE_TRAIN_LORA_*``), on the top layers of ``encoder``
    (``layers`` of them if given, 0 for all; else ``STREAMTUNE_TRAIN_LORA_LAYERS``)."""
    return LoraSpec(
        r=settings.train_lora_r,
        lora_alpha=settings.train_lora_alpha,
        lora_dropout=settings.train_lora_dropout,
        target_modules=settings.lora_targets(),
        layers=top_layers(encoder, settings.train_lora_layers if layers is None else layers),
    )


def bootstrap_recipe(settings: Settings, encoder: PreTrainedModel) -> tuple[LoraSpec, TrainConfig]:
    """How a task's first adapter is trained (``STREAMTUNE_BOOTSTRAP_*``): the trainer's LoRA
    on more layers (all, by default), at a lower learning rate for more epochs. It is built
    once per machine, so it can afford what an online job cannot; online jobs train their top
    layers on top of it (``models.training.stacks_on``)."""
    spec = lora_spec(settings, encoder, layers=settings.bootstrap_lora_layers)
    config = train_config(
        settings, epochs=settings.bootstrap_epochs, learning_rate=settings.bootstrap_learning_rate
    )
    return spec, config


def train_config(settings: Settings, **overrides: object) -> TrainConfig:
    """Training as configured (``STREAMTUNE_TRAIN_*``).

    >>> train_config(Settings(), epochs=1).epochs
    1
    """
    s = settings
    values = dict(
        epochs=s.train_epochs, batch_size=s.train_batch_size, learning_rate=s.train_learning_rate,
        weight_decay=s.train_weight_decay, max_length=s.train_max_length, seed=s.train_seed,
        class_weighted=s.train_class_weighted, validation_fraction=s.train_validation_fraction,
        patience=s.train_patience, bf16=s.train_bf16,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def gate_rule(settings: Settings) -> GateRule:
    """The gate as configured (``STREAMTUNE_GATE_*``)."""
    return GateRule(
        settings.gate_alpha,
        settings.gate_min_improvement,
        settings.gate_anchor_tolerance,
        settings.gate_anchor_floor,
    )
