"""Turn a received adapter into a warmed-up Predictor, or reject it with a reason.

Checks, in order: size and sha256 against the manifest, the signature against the trusted
keys, the blob's own config against the manifest, compatibility with this base model and
task, tensor names and shapes, finiteness. Only then is anything built.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.artifact import AdapterConfig, LoraSpec, unpack
from models.base_encoder import load_encoder, load_tokenizer, locate_base_model
from models.device import resolve_device, resolve_precision
from models.errors import AdapterRejected
from models.inference import Precision, Predictor
from models.lora import adapter_shapes, build_serving_model, check_compatible, check_tensor_shapes
from models.packed_linear import packed_layers
from models.seed import REPO_DATA, seed_adapter
from models.shared_build import build_shared_model, clone_with
from models.signing import Keyring, verify_blob
from schemas.messages import AdapterManifest
from schemas.tasks import get_task
from streamtune.core.settings import Settings


@dataclass
class LoadedBase:
    """The pristine base encoder and tokenizer every adapter is applied to (never modified)."""

    model_id: str
    encoder: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    precision: Precision
    cache_dir: Path | None = None  # where seed heads are cached
    data_dir: Path = REPO_DATA  # where the tasks' seed data lives
    packed: bool = True  # lay the serving encoder's Linear weights out for oneDNN (CPU)

    def __post_init__(self) -> None:
        # Guards the lazily built members below, and the (rare) full builds, which copy the
        # whole encoder: one at a time keeps memory bounded.
        self._lock = threading.Lock()
        self._serving: PreTrainedModel | None = None
        self._shapes: dict[tuple[LoraSpec, int], dict[str, tuple[int, ...]]] = {}

    def serving_encoder(self) -> PreTrainedModel:
        """The base encoder at serving precision on the serving device: one read-only copy that
        every Predictor built here shares for the layers its adapter leaves alone."""
        with self._lock:
            if self._serving is None:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
                serving = copy.deepcopy(self.encoder).to(device=self.device, dtype=dtype).eval()
                for param in serving.parameters():
                    param.requires_grad_(False)
                if self.packed:
                    serving = clone_with(serving, packed_layers(serving))
                self._serving = serving
            return self._serving

    def _check_shapes(self, tensors: dict[str, torch.Tensor], config: AdapterConfig) -> None:
        key = (config.lora, config.num_labels)
        with self._lock:
            if key not in self._shapes:
                self._shapes[key] = adapter_shapes(self.encoder, config.num_labels, config.lora)
            expected = self._shapes[key]
        check_tensor_shapes(expected, tensors)

    def seed(self, task: str) -> bytes:
        """The task's seed adapter (computed once, then cached on disk)."""
        cache = self.cache_dir or Path.home() / ".cache" / "streamtune"
        return seed_adapter(
            task, encoder=self.encoder, tokenizer=self.tokenizer, base_model_id=self.model_id,
            cache_dir=cache, data_dir=self.data_dir,
        )  # fmt: skip

    def predictor(self, blob: bytes, *, task: str, version: str) -> Predictor:
        """Build and warm a Predictor from an (already verified or local) adapter blob."""
        tensors, config = unpack(blob)
        check_compatible(
            config,
            task=task,
            base_model_id=self.model_id,
            hidden_size=self.encoder.config.hidden_size,
            num_labels=get_task(task).num_labels,
        )
        if self.precision == "int8":  # quantisation copies the whole model anyway
            with self._lock:
                model = build_serving_model(self.encoder, tensors, config)
        else:
            self._check_shapes(tensors, config)
            model = build_shared_model(self.encoder, self.serving_encoder(), tensors, config)
        predictor = Predictor(
            model,
            self.tokenizer,
            task=task,
            version=version,
            device=self.device,
            precision=self.precision,
        )
        predictor.warm_up()
        return predictor


def verify_adapter(manifest: AdapterManifest, blob: bytes, keyring: Keyring) -> None:
    """Raise :class:`AdapterRejected` unless ``blob`` is exactly what a trusted key signed
    (``models.signing.verify_blob``, which needs no torch: ``streamtune rollback`` uses it)."""
    verify_blob(manifest, blob, keyring)


def load_verified(
    base: LoadedBase, manifest: AdapterManifest, blob: bytes, keyring: Keyring
) -> Predictor:
    """Verify, check against the manifest, build and warm. Raises :class:`AdapterRejected`."""
    verify_adapter(manifest, blob, keyring)
    _, config = unpack(blob)
    if (
        config.task != manifest.task
        or config.num_labels != manifest.num_labels
        or config.base_model_id != manifest.base_model_id
    ):
        raise AdapterRejected(
            "incompatible", "the adapter's config disagrees with its signed manifest"
        )
    return base.predictor(blob, task=manifest.task, version=manifest.version)


def load_base(settings: Settings, precision: Precision | None = None) -> LoadedBase:
    """The configured base model on the configured device, at the serving precision
    (or ``precision``)."""
    device = resolve_device(settings)
    ref = locate_base_model(settings.base_model)
    return LoadedBase(
        ref.model_id,
        load_encoder(ref.path).eval(),
        load_tokenizer(ref.path),
        device,
        precision or resolve_precision(settings, device),
        settings.cache_dir,
        settings.data_dir,
        settings.serve_packed_weights,
    )
