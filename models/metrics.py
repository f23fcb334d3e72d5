"""Classification metrics, dependency-free.

>>> accuracy([0, 1, 2, 2], [0, 1, 1, 2])
0.75
>>> round(macro_f1([0, 1, 2, 2], [0, 1, 1, 2], 3), 4)
0.7778
"""

from __future__ import annotations


def accuracy(truth: list[int], predicted: list[int]) -> float:
    if not truth:
        return 0.0
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def macro_f1(truth: list[int], predicted: list[int], num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in truth or predictions."""
    scores = []
    for label in range(num_labels):
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0
