"""The trainer's LoRA spec, training config and gate, from the trainer's and the gate's
settings (``settings.train``, ``settings.gate``): one place, so that the trainer, the
bootstrap and the benchmarks train exactly alike.
"""

from __future__ import annotations

from transformers import PreTrainedModel

from models.artifact import LoraSpec
from models.gate import GateRule
from models.training import TrainConfig, top_layers
from streamtune.core.layers import GateSettings, TrainSettings


def lora_spec(
    train: TrainSettings, encoder: PreTrainedModel, layers: int | None = None
) -> LoraSpec:
    """LoRA as configured (``STREAMTUNE_TRAIN_LORA_*``), on the top layers of ``encoder``
    (``layers`` of them if given, 0 for all; else ``STREAMTUNE_TRAIN_LORA_LAYERS``).
    Use: ``lora_spec(settings.train, base.encoder)``."""
    return LoraSpec(
        r=train.lora_r,
        lora_alpha=train.lora_alpha,
        lora_dropout=train.lora_dropout,
        target_modules=train.lora_target_modules(),
        layers=top_layers(encoder, train.lora_layers if layers is None else layers),
    )


def bootstrap_recipe(
    train: TrainSettings, encoder: PreTrainedModel
) -> tuple[LoraSpec, TrainConfig]:
    """How a task's first adapter is trained (``STREAMTUNE_BOOTSTRAP_*``): the trainer's LoRA
    on more layers (all, by default), at a lower learning rate for more epochs. It is built
    once (or shipped: ``models.bootstrap.SHIPPED_DIR``), so it can afford what an online job
    cannot; online jobs train their top layers on top of it (``models.training.stacks_on``).
    Use: ``spec, config = bootstrap_recipe(settings.train, base.encoder)``."""
    spec = lora_spec(train, encoder, layers=train.bootstrap_lora_layers)
    config = train_config(
        train, epochs=train.bootstrap_epochs, learning_rate=train.bootstrap_learning_rate
    )
    return spec, config


def recipe_summary(spec: LoraSpec, config: TrainConfig) -> str:
    """A recipe in one line, as benchmarks and the shipped bootstrap's record report it.

    >>> recipe_summary(LoraSpec(layers=(4, 5)), TrainConfig(epochs=3, learning_rate=2e-3))
    'layers=4,5 epochs=3 lr=0.002'
    """
    layers = ",".join(map(str, spec.layers)) if spec.layers else "all"
    return f"layers={layers} epochs={config.epochs} lr={config.learning_rate:g}"


def train_config(train: TrainSettings, **overrides: object) -> TrainConfig:
    """Training as configured (``STREAMTUNE_TRAIN_*``).

    >>> train_config(TrainSettings(epochs=2)).epochs
    2
    >>> train_config(TrainSettings(), epochs=1).epochs  # an override wins
    1
    """
    values = dict(
        epochs=train.epochs, batch_size=train.batch_size, learning_rate=train.learning_rate,
        weight_decay=train.weight_decay, max_length=train.max_length, seed=train.seed,
        class_weighted=train.class_weighted, validation_fraction=train.validation_fraction,
        patience=train.patience, bf16=train.bf16,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def gate_rule(gate: GateSettings) -> GateRule:
    """The gate as configured (``STREAMTUNE_GATE_*``).

    >>> gate_rule(GateSettings(alpha=0.05)).alpha
    0.05
    """
    return GateRule(gate.alpha, gate.min_improvement, gate.anchor_tolerance, gate.anchor_floor)
