"""The gate: whether a trained adapter replaces the live one, decided on evidence.

Pure: it sees per-example outcomes, never a model. Both models answer the same holdout
examples (the newest labels, never trained on), so the comparison is paired. The candidate
is promoted only if

1. it is right more often than the live model on the holdout, and McNemar's exact test on
   the examples where the two disagree says the gain is not chance (one-sided ``p <= alpha``);
2. its holdout accuracy gains at least ``min_improvement``;
3. its accuracy on the anchor set (held-out seed data, never replayed) falls by at most
   ``anchor_tolerance`` from the live model's: each promotion's forgetting budget;
4. its anchor accuracy stays at or above ``anchor_reference - anchor_floor``, where the
   reference is the bootstrap adapter's anchor accuracy: an absolute floor, so that losses
   within the tolerance cannot compound over promotions. A candidate no worse than the live
   model on the anchor passes it (it moves nothing further below). Without a reference
   (no bootstrap in the live chain) there is no floor.

A loss of exactly a budget is within it. A small holdout can only promote a large gain; as
labels accumulate, smaller gains pass. ``alpha=1`` turns the test off (then only the
thresholds decide).

>>> rule = GateRule(alpha=0.05, min_improvement=0.0, anchor_tolerance=0.05)
>>> live = [True] * 10 + [False] * 20
>>> new = [True] * 25 + [False] * 5
>>> d = rule.decide(new, live, anchor_new=0.80, anchor_live=0.82)
>>> d.promote, d.wins, d.losses, round(d.p_value, 6)
(True, 15, 0, 3.1e-05)
>>> swapped = [False, False] + live[2:10] + [True, True] + live[12:]  # 2 wins, 2 losses
>>> rule.decide(swapped, live, anchor_new=0.8, anchor_live=0.8).reason
'holdout accuracy 0.3333 vs live 0.3333 (2 wins, 2 losses, p=0.6875 > 0.05)'
>>> floored = GateRule(alpha=0.05, anchor_tolerance=0.05, anchor_floor=0.02)
>>> d = floored.decide(new, live, anchor_new=0.80, anchor_live=0.82, anchor_reference=0.83)
>>> d.promote, d.reason
(False, 'anchor accuracy 0.8000 below the floor 0.8100 (bootstrap 0.8300 - 0.02)')
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def mcnemar_p(wins: int, losses: int) -> float:
    """One-sided exact McNemar p-value: P(at least ``wins`` of the discordant pairs go to the
    candidate) when both models are equally good.

    >>> mcnemar_p(0, 0), mcnemar_p(3, 0), round(mcnemar_p(6, 1), 4)
    (1.0, 0.125, 0.0625)
    """
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


#: A loss of exactly a budget is within it (anchor accuracies are ratios of small counts).
_EPS = 1e-6


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    holdout: int  # examples both models answered
    new_accuracy: float
    live_accuracy: float
    wins: int  # candidate right, live wrong
    losses: int  # candidate wrong, live right
    p_value: float
    anchor_new: float
    anchor_live: float
    anchor_reference: float | None = None  # the bootstrap's anchor accuracy; None: no floor

    @property
    def figures(self) -> dict[str, float]:
        """The decision's numbers, for the job's status event and the manifest."""
        figures = {
            "gate_holdout": self.holdout,
            "gate_new_accuracy": round(self.new_accuracy, 4),
            "gate_live_accuracy": round(self.live_accuracy, 4),
            "gate_wins": self.wins,
            "gate_losses": self.losses,
            "gate_p_value": round(self.p_value, 6),
            "gate_anchor_new_accuracy": round(self.anchor_new, 4),
            "gate_anchor_live_accuracy": round(self.anchor_live, 4),
        }
        if self.anchor_reference is not None:
            figures["gate_anchor_reference_accuracy"] = round(self.anchor_reference, 4)
        return figures


@dataclass(frozen=True)
class GateRule:
    alpha: float = 0.2
    min_improvement: float = 0.0
    anchor_tolerance: float = 0.1
    anchor_floor: float = 0.1

    def decide(
        self, new: list[bool], live: list[bool], *, anchor_new: float, anchor_live: float,
        anchor_reference: float | None = None,
    ) -> GateDecision:  # fmt: skip
        """``new``/``live``: whether each model was right on each holdout example.
        ``anchor_reference``: the bootstrap's anchor accuracy (None: no floor)."""
        if len(new) != len(live) or not new:
            raise ValueError("the gate needs the same, non-empty holdout for both models")
        wins = sum(1 for a, b in zip(new, live, strict=True) if a and not b)
        losses = sum(1 for a, b in zip(new, live, strict=True) if b and not a)
        new_acc, live_acc = sum(new) / len(new), sum(live) / len(live)
        p = mcnemar_p(wins, losses)
        stats = f"({wins} wins, {losses} losses, p={p:.4g}"
        floor = None if anchor_reference is None else anchor_reference - self.anchor_floor
        if self.alpha < 1.0 and (p > self.alpha or wins <= losses):
            why = f"holdout accuracy {new_acc:.4f} vs live {live_acc:.4f} {stats} > {self.alpha})"
            ok = False
        elif new_acc - live_acc < self.min_improvement:
            gain = new_acc - live_acc
            why = f"holdout accuracy gain {gain:+.4f} < {self.min_improvement} {stats})"
            ok = False
        elif anchor_live - anchor_new > self.anchor_tolerance + _EPS:
            why = (
                f"anchor accuracy fell {anchor_live - anchor_new:.4f} > tolerance "
                f"{self.anchor_tolerance} ({anchor_live:.4f} -> {anchor_new:.4f})"
            )
            ok = False
        elif floor is not None and anchor_new < floor - _EPS and anchor_new < anchor_live:
            why = (
                f"anchor accuracy {anchor_new:.4f} below the floor {floor:.4f} "
                f"(bootstrap {anchor_reference:.4f} - {self.anchor_floor})"
            )
            ok = False
        else:
            why = (
                f"holdout accuracy {live_acc:.4f} -> {new_acc:.4f} {stats}), "
                f"anchor {anchor_live:.4f} -> {anchor_new:.4f}"
            )
            if floor is not None:
                why += f" (floor {floor:.4f})"
            ok = True
        return GateDecision(
            ok, why, len(new), new_acc, live_acc, wins, losses, p, anchor_new, anchor_live,
            anchor_reference,
        )  # fmt: skip
