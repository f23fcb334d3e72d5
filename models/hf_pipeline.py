"""Present a TextClassifier to Hugging Face ``pipeline("text-classification")``.

Used as the baseline of ``streamtune bench inference``: the same weights, run the way most
users would run them.
"""

from __future__ import annotations

import copy

import torch
from transformers import Pipeline, PreTrainedModel, PreTrainedTokenizerBase, pipeline
from transformers.modeling_outputs import SequenceClassifierOutput

from models.classifier import TextClassifier


class MeanPoolSequenceClassifier(PreTrainedModel):
    """A PreTrainedModel shell around a TextClassifier; outputs ``logits`` like any HF classifier."""

    base_model_prefix = "classifier"
    # The wrapped encoder keeps its own attention implementation; the shell has none to pick.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, classifier: TextClassifier, labels: tuple[str, ...]) -> None:
        config = copy.deepcopy(classifier.encoder.config)
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        super().__init__(config)
        self.classifier = classifier

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **_: object,
    ) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.classifier(input_ids, attention_mask))


def text_classification_pipeline(
    classifier: TextClassifier, tokenizer: PreTrainedTokenizerBase, labels: tuple[str, ...]
) -> Pipeline:
    """An HF text-classification pipeline on CPU over exactly this model."""
    from transformers.utils import logging as hf_logging

    model = MeanPoolSequenceClassifier(classifier, labels).eval()
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity(
        hf_logging.CRITICAL
    )  # "model not supported for text-classification": it works
    try:
        return pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
    finally:
        hf_logging.set_verbosity(level)
