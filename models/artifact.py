"""The adapter artifact: one safetensors blob whose metadata holds the JSON config.

Nothing here unpickles: tensors come from safetensors, the config from JSON, and both are
checked before use.

>>> import torch
>>> cfg = AdapterConfig(task="tfns-sentiment", num_labels=3, base_model_id="m", hidden_size=4,
...                     lora=LoraSpec(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=("query",)))
>>> blob = pack({"head.weight": torch.zeros(3, 4)}, cfg)
>>> tensors, back = unpack(blob)
>>> back == cfg, tensors["head.weight"].shape
(True, torch.Size([3, 4]))
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import asdict, dataclass, field

import orjson
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from models.errors import AdapterRejected, require_finite

FORMAT = "streamtune-adapter/1"
#: Largest adapter accepted from the wire (LoRA adapters are usually well under 10 MB).
MAX_ADAPTER_BYTES = 256 * 1024 * 1024
_MAX_HEADER_BYTES = 1024 * 1024
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class LoraSpec:
    """The LoRA hyper-parameters an adapter was trained with.

    ``layers`` are the encoder layers LoRA adapts (None: every layer). Adapting only the top
    layers lets training run the frozen layers below once per job instead of once per step.
    The defaults match the trainer's settings (``STREAMTUNE_TRAIN_LORA_*``).
    """

    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")
    layers: tuple[int, ...] | None = None

    def validate(self) -> None:
        if not 1 <= self.r <= 512:
            raise AdapterRejected("malformed", f"LoRA rank {self.r} is outside 1..512")
        if not 0 < self.lora_alpha <= 4096:
            raise AdapterRejected("malformed", f"lora_alpha {self.lora_alpha} is outside (0, 4096]")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise AdapterRejected(
                "malformed", f"lora_dropout {self.lora_dropout} is outside [0, 1)"
            )
        if not 1 <= len(self.target_modules) <= 64 or not all(
            isinstance(m, str) and _MODULE_NAME.match(m) for m in self.target_modules
        ):
            raise AdapterRejected("malformed", f"bad target_modules {self.target_modules!r}")
        if self.layers is not None and (
            not 1 <= len(self.layers) <= 512
            or not all(isinstance(i, int) and 0 <= i < 512 for i in self.layers)
        ):
            raise AdapterRejected("malformed", f"bad layers {self.layers!r}")


@dataclass(frozen=True)
class AdapterConfig:
    """What an adapter is for and how to rebuild it. Travels inside the safetensors blob."""

    task: str
    num_labels: int
    base_model_id: str
    hidden_size: int
    lora: LoraSpec = field(default_factory=LoraSpec)
    library_versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str) -> AdapterConfig:
        try:
            raw = orjson.loads(text)
            lora = raw.pop("lora")
            lora["target_modules"] = tuple(lora["target_modules"])
            if lora.get("layers") is not None:
                lora["layers"] = tuple(lora["layers"])
            known = {f for f in cls.__dataclass_fields__}
            config = cls(
                **{k: v for k, v in raw.items() if k in known},
                lora=LoraSpec(
                    **{k: v for k, v in lora.items() if k in LoraSpec.__dataclass_fields__}
                ),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise AdapterRejected("malformed", f"adapter config is not valid: {exc}") from None
        if config.format != FORMAT:
            raise AdapterRejected(
                "incompatible", f"adapter format {config.format!r}, expected {FORMAT!r}"
            )
        if not isinstance(config.num_labels, int) or not 1 <= config.num_labels <= 1024:
            raise AdapterRejected("malformed", f"num_labels {config.num_labels!r} is out of range")
        if not isinstance(config.hidden_size, int) or not 1 <= config.hidden_size <= 65536:
            raise AdapterRejected(
                "malformed", f"hidden_size {config.hidden_size!r} is out of range"
            )
        config.lora.validate()
        return config


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def pack(tensors: dict[str, torch.Tensor], config: AdapterConfig) -> bytes:
    """Serialise adapter tensors and config to safetensors bytes."""
    contiguous = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return save_tensors(contiguous, metadata={"streamtune": config.to_json()})


def unpack(blob: bytes) -> tuple[dict[str, torch.Tensor], AdapterConfig]:
    """Parse a blob; raises :class:`AdapterRejected` on anything malformed or non-finite."""
    if len(blob) > MAX_ADAPTER_BYTES:
        raise AdapterRejected(
            "malformed", f"adapter is {len(blob)} bytes; the limit is {MAX_ADAPTER_BYTES}"
        )
    if len(blob) < 8:
        raise AdapterRejected("malformed", "adapter blob is shorter than a safetensors header")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > min(_MAX_HEADER_BYTES, len(blob) - 8):
        raise AdapterRejected("malformed", f"safetensors header length {header_len} is implausible")
    try:
        header = orjson.loads(blob[8 : 8 + header_len])
        metadata = header.get("__metadata__") or {}
        config = AdapterConfig.from_json(metadata["streamtune"])
        tensors = load_tensors(blob)
    except AdapterRejected:
        raise
    except Exception as exc:  # safetensors raises its own error types
        raise AdapterRejected("malformed", f"not a streamtune safetensors adapter: {exc}") from None
    for name, tensor in tensors.items():
        require_finite(f"tensor {name}", tensor)
    return tensors, config
