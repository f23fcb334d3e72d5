"""The gate: whether a trained adapter replaces the live one, decided from evaluation figures.

Pure: it sees numbers, never a model. A candidate is promoted only if its holdout macro-F1
beats the live model's by ``min_improvement`` and its anchor macro-F1 (held-out seed data,
which guards against forgetting) falls by at most ``anchor_tolerance``.

>>> rule = GateRule(min_improvement=0.01, anchor_tolerance=0.05)
>>> live = {"holdout_macro_f1": 0.60, "anchor_macro_f1": 0.80}
>>> rule.decide({"holdout_macro_f1": 0.70, "anchor_macro_f1": 0.78}, live).promote
True
>>> print(rule.decide({"holdout_macro_f1": 0.605, "anchor_macro_f1": 0.80}, live).reason)
holdout macro-F1 0.6050 vs live 0.6000 (gain +0.0050 < 0.01)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    gain: float  # holdout macro-F1, candidate minus live
    anchor_drop: float  # anchor macro-F1, live minus candidate
    reason: str


@dataclass(frozen=True)
class GateRule:
    min_improvement: float
    anchor_tolerance: float

    def decide(self, new: Mapping[str, float], live: Mapping[str, float]) -> GateDecision:
        """Compare a candidate's figures with the live model's (keys as :func:`evaluate` gives)."""
        gain = new["holdout_macro_f1"] - live["holdout_macro_f1"]
        anchor_drop = live["anchor_macro_f1"] - new["anchor_macro_f1"]
        if gain < self.min_improvement:
            why = (
                f"holdout macro-F1 {new['holdout_macro_f1']:.4f} vs live "
                f"{live['holdout_macro_f1']:.4f} (gain {gain:+.4f} < {self.min_improvement})"
            )
            return GateDecision(False, gain, anchor_drop, why)
        if anchor_drop > self.anchor_tolerance:
            why = f"anchor macro-F1 fell {anchor_drop:.4f} > tolerance {self.anchor_tolerance}"
            return GateDecision(False, gain, anchor_drop, why)
        why = f"holdout macro-F1 {gain:+.4f}, anchor {-anchor_drop:+.4f}"
        return GateDecision(True, gain, anchor_drop, why)
