"""The adaptation scenario of the demo, ``bench adapt`` and the end-to-end test.

Finance tweets (TFNS valid, 3 classes) and then, at a known position, a domain shift to
retail-investor posts: Surge AI's crypto Reddit comments and stock tweets, whose
Negative/Positive labels map to Bearish/Bullish. The base model, which learned finance
news, calls most of those posts Neutral, so its accuracy collapses at the shift.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from schemas.limits import MAX_TEXT_CHARS
from streamtune.replay import ReplayRow

SURGE = {"Negative": 0, "Positive": 1}  # Bearish, Bullish


@dataclass(frozen=True)
class Scenario:
    rows: list[ReplayRow]  # line = position in the stream, from 0
    shift_at: int

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.rows]  # type: ignore[misc]


def build(data_dir: Path, pre: int = 400, post: int | None = None, seed: int = 0) -> Scenario:
    """``pre`` TFNS tweets, then ``post`` surge posts (all 1,061 within the text limit by
    default), each part shuffled."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible order, not a secret
    with (data_dir / "tfns" / "valid.csv").open(newline="", encoding="utf-8") as handle:
        before = [(r["text"], int(r["label"])) for r in csv.DictReader(handle)]
    after = []
    with (data_dir / "surge_crypto" / "sentiment.csv").open(newline="", encoding="utf-8") as handle:
        after += [(r["Comment Text"], SURGE[r["Sentiment"]]) for r in csv.DictReader(handle)]
    with (data_dir / "surge_stock" / "sentiment.csv").open(newline="", encoding="utf-8") as handle:
        after += [(r["Tweet Text"], SURGE[r["Sentiment"]]) for r in csv.DictReader(handle)]
    # The few posts beyond the contract's text limit would only be dead-lettered.
    before = [(t, y) for t, y in before if t.strip() and len(t) <= MAX_TEXT_CHARS]
    after = [(t, y) for t, y in after if t.strip() and len(t) <= MAX_TEXT_CHARS]
    rng.shuffle(before)
    rng.shuffle(after)
    texts = before[:pre] + after[: post if post is not None else len(after)]
    rows = [ReplayRow(i, text, label, None) for i, (text, label) in enumerate(texts)]
    return Scenario(rows, shift_at=pre)
