"""LoRA adapters (PEFT) on the text classifier: create, export, and rebuild for serving.

An adapter is the LoRA weights of the encoder plus the task's head (PEFT's
``modules_to_save``), so the head travels with it. For serving, the LoRA weights are
merged into a private copy of the encoder: inference then costs what the base costs.
"""

from __future__ import annotations

import copy
import importlib.metadata

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from transformers import PreTrainedModel

from models.artifact import AdapterConfig, LoraSpec, pack
from models.classifier import TextClassifier
from models.errors import AdapterRejected, require_finite


def lora_config(spec: LoraSpec, modules_to_save: list[str] | None = None) -> LoraConfig:
    """PEFT's config for ``spec``: the one place a LoraConfig is built.

    >>> lora_config(LoraSpec(layers=(4, 5))).layers_to_transform
    [4, 5]
    """
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=list(spec.target_modules),
        layers_to_transform=list(spec.layers) if spec.layers is not None else None,
        modules_to_save=modules_to_save,
    )


def new_peft_classifier(
    encoder: PreTrainedModel,
    num_labels: int,
    spec: LoraSpec | None = None,
    head: torch.nn.Linear | None = None,
) -> PeftModel:
    """A LoRA-wrapped classifier over a private copy of ``encoder`` (a fresh head unless given)."""
    classifier = TextClassifier(copy.deepcopy(encoder), num_labels)
    if head is not None:
        classifier.head.load_state_dict(head.state_dict())
    return get_peft_model(classifier, lora_config(spec or LoraSpec(), modules_to_save=["head"]))


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "peft", "safetensors"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def export_adapter(model: PeftModel, *, task: str, base_model_id: str, spec: LoraSpec) -> bytes:
    """The adapter as safetensors bytes with its config."""
    classifier: TextClassifier = model.get_base_model()  # type: ignore[assignment]
    config = AdapterConfig(
        task=task,
        num_labels=classifier.num_labels,
        base_model_id=base_model_id,
        hidden_size=classifier.encoder.config.hidden_size,
        lora=spec,
        library_versions=library_versions(),
    )
    return pack(get_peft_model_state_dict(model), config)


def check_compatible(
    config: AdapterConfig, *, task: str, base_model_id: str, hidden_size: int, num_labels: int
) -> None:
    """Raise :class:`AdapterRejected` unless the adapter fits this task and base model."""
    problems = []
    if config.task != task:
        problems.append(f"it is for task {config.task!r}, not {task!r}")
    if config.base_model_id != base_model_id:
        problems.append(
            f"it was trained on base model {config.base_model_id!r}, this is {base_model_id!r}"
        )
    if config.hidden_size != hidden_size:
        problems.append(f"hidden size {config.hidden_size} != {hidden_size}")
    if config.num_labels != num_labels:
        problems.append(f"its head has {config.num_labels} labels, task {task!r} has {num_labels}")
    if problems:
        raise AdapterRejected("incompatible", "; ".join(problems))


def adapter_shapes(
    encoder: PreTrainedModel, num_labels: int, spec: LoraSpec
) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes an adapter of ``spec`` must hold (PEFT is the authority)."""
    return _state_shapes(new_peft_classifier(encoder, num_labels, spec))


def _state_shapes(model: PeftModel) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in get_peft_model_state_dict(model).items()}


def check_tensor_shapes(
    expected: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor]
) -> None:
    """Raise :class:`AdapterRejected` unless ``tensors`` has exactly the expected names and shapes."""
    given = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != given:
        missing = sorted(set(expected) - set(given))[:3]
        extra = sorted(set(given) - set(expected))[:3]
        wrong = sorted(n for n in set(expected) & set(given) if expected[n] != given[n])[:3]
        raise AdapterRejected(
            "incompatible",
            f"adapter tensors do not fit the model: missing {missing}, unexpected {extra}, "
            f"wrong shape {[(n, given[n], expected[n]) for n in wrong]}",
        )


def build_serving_model(
    encoder: PreTrainedModel, tensors: dict[str, torch.Tensor], config: AdapterConfig
) -> TextClassifier:
    """Apply an unpacked adapter to a copy of ``encoder`` and merge it. ``encoder`` is untouched.

    The reference build (PEFT's own merge, a private copy of every layer): serving uses
    ``models.shared_build``, which shares the untouched layers and is checked against this.
    Raises :class:`AdapterRejected` if the tensors do not match what the config describes.
    """
    model = new_peft_classifier(encoder, config.num_labels, config.lora)
    check_tensor_shapes(_state_shapes(model), tensors)
    set_peft_model_state_dict(model, {k: v.to(torch.float32) for k, v in tensors.items()})
    merged: TextClassifier = model.merge_and_unload()  # type: ignore[assignment]
    merged.eval()
    for name, param in merged.named_parameters():
        require_finite(f"merged weight {name}", param)
    return merged
