"""Per-source trust in feedback labels: a poisoning defence for training data.

A feedback source that flips a share of its labels agrees less often with the live model
than honest sources do, and less often with other sources where they label the same text.
Each source's agreement is compared with the pooled agreement of the *other* sources (so the
model's own error rate cancels out) and shrunk toward it with a Beta prior worth
``prior_strength`` examples (so a small source is not condemned on a few disagreements):

    trust(s) = smoothed_agreement(s) / peer_agreement(s),  capped at 1

A source whose trust falls below ``min_trust`` is dropped from a job's training data. With
no peers (one source only) there is nothing to compare against: the source is kept, and
:attr:`SourceTrust.peerless` says so.

Pure Python, no model: the agreement comes from ``predicted_label`` on each labelled example
(the live model's answer that the worker joined to the feedback).

>>> clean = [("a", 0, 0)] * 80 + [("a", 1, 0)] * 20 + [("b", 0, 0)] * 79 + [("b", 2, 0)] * 21
>>> poisoned = [("c", 0, 0)] * 55 + [("c", 1, 0)] * 45
>>> trust = estimate_trust(clean + poisoned)
>>> {s: (t.kept, round(t.trust, 2)) for s, t in sorted(trust.items())}
{'a': (True, 1.0), 'b': (True, 1.0), 'c': (False, 0.74)}
>>> estimate_trust(poisoned)["c"].peerless, estimate_trust(poisoned)["c"].kept
(True, True)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

#: (source, label, the model's predicted label or None), optionally with the text as a 4th
#: item, so that sources labelling the same text are compared directly.
Observation = tuple[str, int, int | None] | tuple[str, int, int | None, Hashable]


@dataclass(frozen=True)
class SourceTrust:
    """What the estimator concluded about one source."""

    source: str
    examples: int
    judged: int  # examples with a prediction (or a peer label) to compare against
    agreement: float  # smoothed agreement with the model and the peers' labels
    peer_agreement: float | None  # the other sources' pooled agreement; None without peers
    trust: float  # agreement relative to the peers, in [0, 1]
    kept: bool

    @property
    def peerless(self) -> bool:
        return self.peer_agreement is None

    def describe(self) -> str:
        peers = "no peers" if self.peerless else f"peers {self.peer_agreement:.3f}"
        verdict = "kept" if self.kept else "DROPPED"
        return (
            f"{self.source}: trust {self.trust:.3f} (agreement {self.agreement:.3f} over "
            f"{self.judged} judged, {peers}) {verdict}"
        )


def estimate_trust(
    observations: Iterable[Observation],
    *,
    min_trust: float = 0.85,
    prior_strength: float = 20.0,
) -> dict[str, SourceTrust]:
    """Trust per source; sources below ``min_trust`` are marked ``kept=False``.

    ``min_trust=0`` keeps every source (the estimate is still reported).
    """
    examples: Counter[str] = Counter()
    agree: Counter[str] = Counter()
    judged: Counter[str] = Counter()
    by_text: dict[Hashable, list[tuple[str, int]]] = defaultdict(list)
    for obs in observations:
        source, label, predicted = obs[0], obs[1], obs[2]
        examples[source] += 1
        if predicted is not None:
            judged[source] += 1
            agree[source] += int(label == predicted)
        if len(obs) > 3:
            by_text[obs[3]].append((source, label))
    # Direct comparison where several sources labelled the same text: the others' majority.
    for labels in by_text.values():
        if len({s for s, _ in labels}) < 2:
            continue
        for source, label in labels:
            others = Counter(lab for s, lab in labels if s != source)
            judged[source] += 1
            agree[source] += int(others.most_common(1)[0][0] == label)
    out = {}
    for source, count in examples.items():
        peer_judged = sum(judged.values()) - judged[source]
        if peer_judged == 0:
            rate = agree[source] / judged[source] if judged[source] else 1.0
            out[source] = SourceTrust(source, count, judged[source], rate, None, 1.0, True)
            continue
        peer_rate = (sum(agree.values()) - agree[source]) / peer_judged
        smoothed = (agree[source] + prior_strength * peer_rate) / (judged[source] + prior_strength)
        trust = min(1.0, smoothed / peer_rate) if peer_rate > 0 else 1.0
        out[source] = SourceTrust(
            source, count, judged[source], smoothed, peer_rate, trust, trust >= min_trust
        )
    return out
