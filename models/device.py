"""Choose the torch device and thread count once, from the settings."""

from __future__ import annotations

import torch

from models.inference import Precision
from streamtune.core.settings import Settings


def resolve_device(settings: Settings) -> torch.device:
    """``cuda`` when asked for or (``auto``) available, else ``cpu``; sets CPU threads.

    >>> resolve_device(Settings(device="cpu")).type
    'cpu'
    """
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if settings.device == "cuda" and not torch.cuda.is_available():
        from streamtune.core.errors import ConfigError

        raise ConfigError("STREAMTUNE_DEVICE=cuda but torch sees no CUDA device")
    if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively (AVX512-BF16/AMX on a CPU, or a bf16 GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast when asked for and native on ``device``; a no-op context otherwise."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=bf16 and bf16_supported(device)
    )


def resolve_precision(settings: Settings, device: torch.device) -> Precision:
    """``auto`` picks bf16 where the hardware runs it natively (AVX512-BF16/AMX, or a GPU with
    bf16), since it keeps fp32's accuracy at a fraction of the cost; fp32 elsewhere."""
    if settings.serve_precision != "auto":
        return settings.serve_precision
    return "bf16" if bf16_supported(device) else "fp32"
