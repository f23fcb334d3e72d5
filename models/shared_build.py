"""Serving models that share the base encoder's untouched modules.

A LoRA adapter changes a few Linear layers (the top layers' attention and MLP) and the
head. A serving model therefore needs private copies of only those: everything else is one
read-only copy of the base encoder, kept at serving precision on the serving device and
shared by every live adapter. A build then costs a few small matrix products instead of a
copy, merge and conversion of the whole encoder, so a hot swap is quick even while the build
thread gets little CPU (it runs at a lower priority than inference), and every live adapter
costs memory only for the layers it changes.

``models.lora.build_serving_model`` (PEFT's own merge) stays the reference: a unit test
checks that both give the same logits.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import PreTrainedModel

from models.artifact import AdapterConfig
from models.classifier import TextClassifier
from models.errors import AdapterRejected, require_finite
from models.packed_linear import like

#: PEFT prefixes every key of a wrapped model's state dict with this.
PEFT_PREFIX = "base_model.model."
LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


def lora_pairs(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module path in the classifier: (A, B)}`` for every LoRA pair in an adapter.

    >>> a, b = torch.zeros(2, 4), torch.zeros(3, 2)
    >>> prefix = PEFT_PREFIX + "encoder.encoder.layer.5.attention.self.query"
    >>> list(lora_pairs({prefix + LORA_A: a, prefix + LORA_B: b}))
    ['encoder.encoder.layer.5.attention.self.query']
    """
    pairs = {}
    for name, a in tensors.items():
        if name.startswith(PEFT_PREFIX) and name.endswith(LORA_A):
            path = name[len(PEFT_PREFIX) : -len(LORA_A)]
            pairs[path] = (a, tensors[PEFT_PREFIX + path + LORA_B])
    return pairs


def clone_with(module: nn.Module, replacements: dict[str, nn.Module]) -> nn.Module:
    """A copy of ``module`` whose submodules at the dotted ``replacements`` paths are swapped.

    Only the modules on the way to a replacement are copied (shallowly, with their own child
    table); every other submodule, and every parameter, is shared with ``module``, which is
    left untouched.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    >>> new = nn.Linear(2, 2)
    >>> clone = clone_with(net, {"1.0": new})
    >>> clone[1][0] is new, net[1][0] is not new, clone[0] is net[0], clone[1][1] is net[1][1]
    (True, True, True, True)
    """
    if not replacements:
        return module
    direct: dict[str, nn.Module] = {}
    nested: dict[str, dict[str, nn.Module]] = {}
    for path, new in replacements.items():
        child, _, rest = path.partition(".")
        if child not in module._modules:
            raise KeyError(f"{type(module).__name__} has no submodule {child!r}")
        if rest:
            nested.setdefault(child, {})[rest] = new
        else:
            direct[child] = new
    clone = copy.copy(module)  # shares __dict__'s values, so it needs its own child table
    clone._modules = dict(module._modules)
    clone._modules.update(direct)
    for child, below in nested.items():
        clone._modules[child] = clone_with(module._modules[child], below)  # type: ignore[arg-type]
    return clone


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear layer that holds exactly these tensors (no random initialisation first)."""
    out_features, in_features = weight.shape
    layer = torch.nn.utils.skip_init(
        nn.Linear, in_features, out_features, bias=bias is not None,
        device=weight.device, dtype=weight.dtype,
    )  # fmt: skip
    layer.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer


@torch.no_grad()
def build_shared_model(
    base: PreTrainedModel,
    serving: PreTrainedModel,
    tensors: dict[str, torch.Tensor],
    config: AdapterConfig,
) -> TextClassifier:
    """A serving classifier: ``serving`` (the base at serving precision and device) with the
    adapter's LoRA merged into private copies of the layers it targets, and its head.

    The merge runs in fp32 from the pristine ``base`` weights, then converts once, so the
    result matches PEFT's merge of an fp32 copy. The caller has already checked the tensors'
    names and shapes. Raises :class:`AdapterRejected` on a non-finite weight.
    """
    param = next(serving.parameters())
    dtype, device = param.dtype, param.device
    scale = config.lora.lora_alpha / config.lora.r
    replacements: dict[str, nn.Module] = {}
    for path, (a, b) in lora_pairs(tensors).items():
        if not path.startswith("encoder."):
            raise AdapterRejected("incompatible", f"LoRA on {path!r}, outside the encoder")
        inner = path[len("encoder.") :]
        target = base.get_submodule(inner)
        if not isinstance(target, nn.Linear):
            raise AdapterRejected("incompatible", f"LoRA target {path!r} is not a Linear layer")
        merged = target.weight.float() + scale * (b.float() @ a.float())
        weight = require_finite(f"merged weight {path}", merged).to(device=device, dtype=dtype)
        bias = None if target.bias is None else target.bias.to(device=device, dtype=dtype)
        # A packed serving encoder gets a packed layer (with the GELU it may have fused).
        replacements[inner] = like(serving.get_submodule(inner), weight, bias) or _linear(
            weight, bias
        )
    model = TextClassifier.__new__(TextClassifier)
    nn.Module.__init__(model)
    model.encoder = clone_with(serving, replacements)  # type: ignore[assignment]
    model.dropout = nn.Dropout(0.0)
    head_w = require_finite(
        "merged weight head.weight", tensors[PEFT_PREFIX + "head.weight"].float()
    )
    head_b = require_finite("merged weight head.bias", tensors[PEFT_PREFIX + "head.bias"].float())
    model.head = _linear(
        head_w.to(device=device, dtype=dtype), head_b.to(device=device, dtype=dtype)
    )
    return model.eval()
