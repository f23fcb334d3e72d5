"""Batch inference with length bucketing, fp32 or int8.

Texts in a batch are tokenised together without padding, sorted by length and cut into
sub-batches of similar length (many short texts or few long ones, up to a token budget), so
little compute goes to padding; results come back in the original order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from models.batching import length_sorted_batches, token_ids
from models.classifier import TextClassifier

Precision = Literal["fp32", "bf16", "int8"]


@dataclass(frozen=True)
class TextPrediction:
    label: int
    probs: list[float]
    token_count: int


def quantize_int8(model: TextClassifier) -> TextClassifier:
    """Dynamic int8 quantisation of every Linear layer (CPU inference)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice, once per call
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _placed(tensor: torch.Tensor, device: torch.device) -> bool:
    """Whether ``tensor`` is on ``device`` ("cuda" means any CUDA device)."""
    return tensor.device == device or (device.index is None and tensor.device.type == device.type)


class Predictor:
    """A ready-to-serve model for one task and one adapter version.

    Immutable once built: a hot swap replaces the whole Predictor between two batches.
    """

    def __init__(
        self,
        model: TextClassifier,
        tokenizer: PreTrainedTokenizerBase,
        *,
        task: str,
        version: str,
        device: torch.device,
        precision: Precision = "fp32",
        max_length: int = 128,
        sub_batch: int = 128,
        sub_batch_tokens: int | None = None,
    ) -> None:
        model = model.eval()
        if precision == "int8" and device.type == "cpu":
            model = quantize_int8(model)
        elif precision == "bf16" and any(p.dtype != torch.bfloat16 for p in model.parameters()):
            model = model.to(dtype=torch.bfloat16)
        # A model built on the shared serving encoder is already in place: leave its shared
        # (read-only, in use by live predictors) parameters alone.
        if any(not _placed(p, device) for p in model.parameters()):
            model = model.to(device)
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.version = version
        self.device = device
        self.precision = precision
        self.max_length = max_length
        self.sub_batch = sub_batch
        # About a thousand tokens a forward pass keeps the matrix multiplies efficient on a
        # CPU while each sub-batch spans a narrow range of lengths (measured on TFNS); a GPU
        # wants far larger passes.
        default_tokens = 1024 if device.type == "cpu" else 16384
        self.sub_batch_tokens = sub_batch_tokens or default_tokens

    def warm_up(self) -> float:
        """Run two tiny batches so the first real batch pays no one-off costs; returns seconds."""
        began = time.perf_counter()
        self.predict(["warm up", "a somewhat longer warm up text for the second shape"])
        return time.perf_counter() - began

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """The pooled features the head sees, (len(texts), hidden) in fp32 on the CPU."""
        out = torch.empty(len(texts), self.model.head.in_features)
        for chunk, batch in length_sorted_batches(
            self.tokenizer, texts, self.sub_batch, self.max_length, max_tokens=self.sub_batch_tokens
        ):
            pooled = self.model.embed(
                batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            )
            out[chunk] = pooled.float().cpu()
        return out

    @torch.inference_mode()
    def predict(self, texts: list[str]) -> list[TextPrediction]:
        if not texts:
            return []
        ids = token_ids(self.tokenizer, texts, self.max_length)
        out: list[TextPrediction | None] = [None] * len(texts)
        for chunk, batch in length_sorted_batches(
            self.tokenizer, texts, self.sub_batch, ids=ids, max_tokens=self.sub_batch_tokens
        ):
            input_ids = batch["input_ids"].to(self.device)
            mask = batch["attention_mask"].to(self.device)
            pooled = self.model.embed(input_ids, mask)
            probs = torch.softmax(self.model.head(pooled).float(), dim=-1).cpu()
            labels = probs.argmax(dim=-1).tolist()
            for row, index in enumerate(chunk):
                out[index] = TextPrediction(
                    label=labels[row],
                    probs=[round(p, 6) for p in probs[row].tolist()],
                    token_count=len(ids[index]),
                )
        return out  # type: ignore[return-value]
