"""Linear layers whose weights are laid out once for oneDNN: faster CPU inference.

PyTorch's ``F.linear`` hands its weight to the matrix-multiply library in plain row-major
order, and the library re-blocks it on every call. For a small encoder served in batches of
a few hundred tokens that repacking is a real share of the work: laying each weight out once
in oneDNN's blocked format (what ``torch.compile`` does with frozen weights on a CPU), and
fusing BERT's exact GELU into the matrix multiply before it, serves about 15% more texts per
second on two cores, in fp32 and bf16 alike (``streamtune bench inference``).

Only inference uses it: the packed kernels have no backward pass. Where they are missing or
give a different answer than ``F.linear`` (checked once per dtype), nothing is packed, so the
model stays exactly what it was.

>>> layer, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
>>> def agrees() -> bool:
...     packed = PackedLinear(layer.weight, layer.bias)
...     return bool(torch.allclose(packed(x), layer(x), atol=1e-5))
>>> import os  # CI runs on an x86 CPU with oneDNN: there, packing must be there and agree
>>> packing_supported(torch.float32) or not os.environ.get("CI")
True
>>> agrees() if packing_supported(torch.float32) else True  # elsewhere, a build without it
True
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from models.device import bf16_supported

log = logging.getLogger(__name__)

Activation = Literal["none", "gelu"]

#: oneDNN picks its weight layout for a typical batch: serve's batches hold a few hundred tokens.
TOKENS_HINT = 512


class PackedLinear(nn.Module):
    """``activation(x @ weight.T + bias)`` with ``weight`` pre-laid-out for oneDNN (CPU only).

    ``weight`` and ``bias`` stay as (frozen) parameters, shared with the layer they came from,
    so the model still reports its dtype and device and a state dict still reads the same.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, activation: Activation = "none"
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.activation = activation
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, TOKENS_HINT)

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> PackedLinear:
        # ``.to()``, ``.float()`` and the like convert the parameters: lay them out anew, so
        # the packed copy never disagrees with them.
        out = super()._apply(fn, recurse)
        if self.weight.device.type != "cpu":
            raise TypeError("a packed Linear layer runs on the CPU only; build the model unpacked")
        self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, TOKENS_HINT)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # "none" as the algorithm of the gelu post-op is the exact (erf) GELU BERT uses.
        algorithm = "none" if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(
            x, self._packed, self.bias, self.activation, [], algorithm
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.activation}"
        )


@functools.cache
def packing_supported(dtype: torch.dtype) -> bool:
    """Whether packed layers exist here for CPU tensors of ``dtype`` and agree with ``F.linear``
    (with the GELU fused and without). Checked once per dtype; a failure is logged."""
    if dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    # The same measured decision as serve's ``auto`` and training's autocast: where bf16 is
    # emulated (or only marginally faster) its packed kernels are not used either.
    if dtype == torch.bfloat16 and not bf16_supported(torch.device("cpu")):
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(24, 16, generator=generator).to(dtype)
        bias = torch.randn(24, generator=generator).to(dtype)
        x = torch.randn(3, 5, 16, generator=generator).to(dtype)
        with torch.inference_mode():
            want = nn.functional.linear(x, weight, bias).float()
            plain = PackedLinear(weight, bias)(x).float()
            fused = PackedLinear(weight, bias, "gelu")(x).float()
        tolerance = 1e-4 if dtype == torch.float32 else 5e-2
        agree = torch.allclose(plain, want, rtol=tolerance, atol=tolerance) and torch.allclose(
            fused, nn.functional.gelu(want), rtol=tolerance, atol=tolerance
        )
    except (RuntimeError, AttributeError) as exc:  # an op missing from this torch build
        log.info("packed Linear layers unavailable (%s); using PyTorch's default kernels", exc)
        return False
    if not agree:
        log.warning("packed Linear layers disagree with F.linear here; not using them")
    return agree


def _is_exact_gelu(module: nn.Module | None) -> bool:
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    # transformers' GELUActivation wraps the exact, erf-based GELU.
    return (
        type(module).__name__ == "GELUActivation"
        and getattr(module, "act", None) is nn.functional.gelu
    )


def packed_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{dotted path: replacement}`` that packs each Linear layer of ``model`` (sharing its
    tensors); ``models.shared_build.clone_with(model, ...)`` applies it to a copy.

    Where a Linear feeds an exact GELU the way BERT's intermediate block does (a ``dense``
    layer and an ``intermediate_act_fn``), the GELU is fused into the packed layer. Empty when
    packing is not supported for the model's dtype or the model is not on the CPU.
    """
    param = next(model.parameters())
    if param.device.type != "cpu" or not packing_supported(param.dtype):
        return {}
    replacements: dict[str, nn.Module] = {}
    for path, module in model.named_modules():
        act = getattr(module, "intermediate_act_fn", None)
        dense = getattr(module, "dense", None)
        if isinstance(dense, nn.Linear) and _is_exact_gelu(act):
            prefix = f"{path}." if path else ""
            replacements[prefix + "dense"] = PackedLinear(dense.weight, dense.bias, "gelu")
            replacements[prefix + "intermediate_act_fn"] = nn.Identity()
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear) and path not in replacements:
            replacements[path] = PackedLinear(module.weight, module.bias)
    return replacements


def like(existing: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | None:
    """A packed layer with ``existing``'s fused activation, if ``existing`` is packed; else None.

    A build that replaces a layer of a packed model uses this, so the replacement keeps the
    GELU that packing moved into the layer.
    """
    if isinstance(existing, PackedLinear):
        return PackedLinear(weight, bias, existing.activation)
    return None
