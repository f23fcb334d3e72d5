"""bf16 or fp32: a pure decision from measured timings, and what this process measured.

``models.device`` times a short matrix multiply in both dtypes (torch lives there); the
decision and the record of it live here, so ``/metrics`` (:mod:`streamtune.core.observability`)
can report them without loading torch.

>>> choose("cpu", fp32_ms=8.1, bf16_ms=13.9, bf16_native=True)   # emulated bf16: slower
'fp32'
>>> choose("cpu", fp32_ms=2.1, bf16_ms=0.8, bf16_native=True)    # AVX512-BF16 or AMX
'bf16'
>>> choose("cpu", fp32_ms=2.0, bf16_ms=1.9, bf16_native=True)    # a tie goes to fp32
'fp32'
>>> choose("cpu", fp32_ms=9.0, bf16_ms=1.0, bf16_native=False)   # never emulated bf16
'fp32'
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

Choice = Literal["fp32", "bf16"]

#: bf16 is chosen only when it takes at most this share of fp32's time. It rounds weights
#: and activations to 8 bits of mantissa (a fraction of a point of accuracy, see ``bench
#: inference``), and a short timing on a busy machine is noisy by ~10%: only a clear win pays.
BF16_MARGIN = 0.8


@dataclass(frozen=True)
class PrecisionProbe:
    """One device's measured matrix-multiply times and the precision chosen from them.

    ``bf16_ms`` is None where bf16 is not native: an emulation that would never be used
    is not worth timing (it can take seconds).
    """

    device: str  # "cpu" or "cuda"
    fp32_ms: float
    bf16_ms: float | None
    bf16_native: bool
    choice: Choice


def choose(device: str, fp32_ms: float, bf16_ms: float | None, bf16_native: bool) -> Choice:
    """``bf16`` where it is native and clearly faster (:data:`BF16_MARGIN`), else ``fp32``.

    A GPU with bf16 always gets it: a GEMM this small is bound by the kernel launch there,
    while the tensor cores win at the sizes training and serving run.
    """
    if not bf16_native or bf16_ms is None:
        return "fp32"
    if device == "cuda":
        return "bf16"
    return "bf16" if bf16_ms <= BF16_MARGIN * fp32_ms else "fp32"


_lock = threading.Lock()
_recorded: dict[str, PrecisionProbe] = {}


def record(probe: PrecisionProbe) -> None:
    """Remember ``probe`` as this process's choice for its device type (for ``/metrics``)."""
    with _lock:
        _recorded[probe.device] = probe


def recorded() -> list[PrecisionProbe]:
    """The probes this process has run or read, one per device type."""
    with _lock:
        return list(_recorded.values())
