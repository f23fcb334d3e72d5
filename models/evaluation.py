"""Score an adapter on labelled texts exactly as serve would run it (same precision)."""

from __future__ import annotations

from typing import Protocol

from models.inference import Predictor
from models.metrics import accuracy, macro_f1

#: Named evaluation sets: name -> (texts, label indices).
EvalSets = dict[str, tuple[list[str], list[int]]]


class PredictorFactory(Protocol):
    def predictor(self, blob: bytes, *, task: str, version: str) -> Predictor: ...


def evaluate(
    base: PredictorFactory, blob: bytes, task: str, num_labels: int, sets: EvalSets
) -> dict[str, float]:
    """``{NAME_accuracy, NAME_macro_f1}`` for each named set (``holdout``, ``anchor``, ...)."""
    predictor = base.predictor(blob, task=task, version="eval")
    out = {}
    for name, (texts, labels) in sets.items():
        predicted = [p.label for p in predictor.predict(texts)] if texts else []
        out[f"{name}_accuracy"] = accuracy(labels, predicted)
        out[f"{name}_macro_f1"] = macro_f1(labels, predicted, num_labels)
    return out
