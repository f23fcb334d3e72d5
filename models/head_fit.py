"""The fast path: a new linear head on the live encoder's features, fitted in well under a
second, so that a drift is answered before a LoRA job could finish.

The head is a multinomial logistic regression, fitted by L-BFGS with an L2 penalty that pulls
the weights towards the live head (a prior: with few labels the new head stays close to what
worked; with many it moves freely). The bias is not penalised, so a changed label mix is
learned at once. The penalty's strength is picked by k-fold cross-validation on the fit set.

>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(200, 8, generator=g)
>>> y = (x[:, 0] > 0).long().tolist()
>>> head = fit_head(x, y, num_labels=2)
>>> accuracy_of(head, x, y) > 0.95
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from models.artifact import pack, unpack
from models.training import HEAD_KEYS

#: Candidate penalty strengths, per example (the loss is a mean over examples).
PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclass(frozen=True)
class Head:
    weight: torch.Tensor  # (num_labels, hidden)
    bias: torch.Tensor  # (num_labels,)
    penalty: float = 0.0

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T + self.bias


def accuracy_of(head: Head, features: torch.Tensor, labels: list[int]) -> float:
    """Share of ``labels`` the head predicts from ``features``."""
    predicted = head.logits(features).argmax(-1)
    return float((predicted == torch.tensor(labels)).float().mean())


def _fit(
    features: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    num_labels: int,
    prior: Head | None,
    penalty: float,
) -> Head:
    hidden = features.shape[1]
    w0 = prior.weight.float() if prior is not None else torch.zeros(num_labels, hidden)
    b0 = prior.bias.float() if prior is not None else torch.zeros(num_labels)
    weight = w0.clone().requires_grad_(True)
    bias = b0.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=100, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        losses = torch.nn.functional.cross_entropy(
            features @ weight.T + bias, target, reduction="none"
        )
        loss = (losses * weights).sum() / weights.sum() + penalty * (weight - w0).pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return Head(weight.detach(), bias.detach(), penalty)


def _fold_of(n: int, folds: int, seed: int) -> torch.Tensor:
    """The fold of each of ``n`` rows: a seeded shuffle dealt round-robin."""
    order = list(range(n))
    random.Random(seed).shuffle(order)  # noqa: S311 - fold assignment, not secrets
    fold_of = torch.empty(n, dtype=torch.long)
    for rank, index in enumerate(order):
        fold_of[index] = rank % folds
    return fold_of


def _fit_data(
    features: torch.Tensor, labels: list[int], sample_weights: list[float] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, target, weights) ready for :func:`_fit`."""
    # A copy made outside inference mode: features from a Predictor may be inference tensors,
    # which autograd refuses to save.
    with torch.inference_mode(False):
        features = features.float().clone()
    target = torch.tensor(labels, dtype=torch.long)
    weights = torch.tensor(sample_weights or [1.0] * len(labels), dtype=torch.float32)
    return features, target, weights


def _cross_fitted(
    features: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    fold_of: torch.Tensor,
    num_labels: int,
    prior: Head | None,
    penalty: float,
) -> torch.Tensor:
    """Each row's label as predicted by a head fitted on the other folds."""
    predicted = torch.empty(len(target), dtype=torch.long)
    for k in range(int(fold_of.max()) + 1):
        fit_rows, test_rows = fold_of != k, fold_of == k
        head = _fit(
            features[fit_rows], target[fit_rows], weights[fit_rows], num_labels, prior, penalty
        )
        predicted[test_rows] = head.logits(features[test_rows]).argmax(-1)
    return predicted


def fit_head(
    features: torch.Tensor,
    labels: list[int],
    num_labels: int,
    *,
    prior: Head | None = None,
    sample_weights: list[float] | None = None,
    folds: int = 3,
    seed: int = 0,
    score_rows: int | None = None,
) -> Head:
    """Fit a head on ``features`` (n, hidden); the penalty is chosen by ``folds``-fold CV.

    With ``score_rows``, only the first that many rows (the new regime's) are scored in the
    cross-validation; the rest (rehearsal) always help fit, never choose."""
    features, target, weights = _fit_data(features, labels, sample_weights)
    with torch.enable_grad():
        penalty = PENALTIES[1]
        if len(labels) >= 5 * folds:
            scored = torch.zeros(len(labels))
            scored[: score_rows if score_rows is not None else len(labels)] = 1.0
            fold_of = _fold_of(len(labels), folds, seed)
            scores = {}
            for p in PENALTIES:
                predicted = _cross_fitted(features, target, weights, fold_of, num_labels, prior, p)
                hits = (predicted == target).float()
                scores[p] = float((hits * weights * scored).sum())
            # Ties go to the stronger penalty: the simpler head, closer to the prior.
            penalty = max(PENALTIES, key=lambda p: (scores[p], p))
        return _fit(features, target, weights, num_labels, prior, penalty)


def out_of_fold_labels(
    features: torch.Tensor,
    labels: list[int],
    num_labels: int,
    *,
    penalty: float,
    rows: int,
    prior: Head | None = None,
    sample_weights: list[float] | None = None,
    folds: int = 3,
    seed: int = 1,
) -> list[int] | None:
    """The labels that heads fitted without them predict for the first ``rows`` rows: held-out
    answers on the fit set, by ``folds``-fold cross-fitting at ``penalty``. None when there are
    too few rows to split.

    A gate compares them with the live head's answers on the same rows: many more paired
    examples than a holdout of a few dozen, so a real gain is seen sooner. The live head may
    have been fitted on some of those rows, which only makes the comparison harder to win.

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(90, 4, generator=g)
    >>> y = (x[:, 0] > 0).long().tolist()
    >>> oof = out_of_fold_labels(x, y, 2, penalty=1e-3, rows=60)
    >>> len(oof), sum(a == b for a, b in zip(oof, y)) > 55
    (60, True)
    """
    if rows < 5 * folds:
        return None
    features, target, weights = _fit_data(features, labels, sample_weights)
    fold_of = _fold_of(len(labels), folds, seed)
    with torch.enable_grad():
        predicted = _cross_fitted(features, target, weights, fold_of, num_labels, prior, penalty)
    return predicted[:rows].tolist()


def head_of(blob: bytes) -> Head:
    """The head of an adapter blob."""
    tensors, _ = unpack(blob)
    return Head(tensors[HEAD_KEYS[0]].float(), tensors[HEAD_KEYS[1]].float())


def with_head(blob: bytes, head: Head) -> bytes:
    """The adapter ``blob`` with its head replaced: same LoRA weights, same config."""
    tensors, config = unpack(blob)
    tensors[HEAD_KEYS[0]] = head.weight.to(tensors[HEAD_KEYS[0]].dtype)
    tensors[HEAD_KEYS[1]] = head.bias.to(tensors[HEAD_KEYS[1]].dtype)
    return pack(tensors, config)
