"""What feedback a scenario's events get: which are labelled, how late, and how often wrongly.

A desk does not label every event a second later. A :class:`FeedbackPlan` fixes, before the
run, the label each event will receive (None: never labelled), so the live pipeline and
every baseline (River, scheduled retraining, the oracle) get the same labels at the same
positions in the stream. Delays are in seconds and become events at the replay's rate.

>>> from streamtune.replay import ReplayRow
>>> rows = [ReplayRow(i, f"text {i}", i % 3, None) for i in range(1000)]
>>> plan = PARTIAL
>>> given = plan.labels(rows, num_labels=3)
>>> labelled = [g for g in given if g is not None]
>>> 0.25 < len(labelled) / len(rows) < 0.35      # about 30% get a label
True
>>> wrong = sum(g != r.label for g, r in zip(given, rows) if g is not None)
>>> 0 < wrong / len(labelled) < 0.1                # about 5% of them wrongly
True
>>> plan.labels(rows, num_labels=3) == given       # the same plan every time
True
>>> FULL.delay_events(rate=10.0), PARTIAL.delay_events(rate=10.0)
(10, 300)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from streamtune.replay import ReplayRow


@dataclass(frozen=True)
class FeedbackPlan:
    """``fraction`` of the events get a label, ``delay_s`` after the event; ``noise`` of the
    labels given are wrong (another class, uniformly)."""

    name: str
    fraction: float
    delay_s: float
    noise: float = 0.0
    seed: int = 0

    def labels(self, rows: list[ReplayRow], *, num_labels: int) -> list[int | None]:
        """The label each event will get, in stream order (None: no feedback)."""
        rng = random.Random(self.seed)  # noqa: S311 - a reproducible sample, not a secret
        out: list[int | None] = []
        for row in rows:
            labelled, flip, other = rng.random(), rng.random(), rng.randrange(num_labels - 1)
            if row.label is None or labelled >= self.fraction:
                out.append(None)
            elif flip < self.noise:
                out.append(other if other < row.label else other + 1)  # any class but the true
            else:
                out.append(row.label)
        return out

    def delay_events(self, rate: float) -> int:
        """The delay in events at ``rate`` events per second (at least one)."""
        return max(1, round(self.delay_s * rate))


#: Every event labelled a second later: the best case.
FULL = FeedbackPlan("full", fraction=1.0, delay_s=1.0)
#: What a desk gets: 30% of events labelled, 30 s later, 5% of the labels wrong.
PARTIAL = FeedbackPlan("partial", fraction=0.3, delay_s=30.0, noise=0.05)
PLANS = {plan.name: plan for plan in (FULL, PARTIAL)}
