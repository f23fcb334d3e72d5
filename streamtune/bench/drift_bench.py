"""``streamtune bench drift``: false alarms and detection delay of the worker's detectors.

The streams are built from TFNS. A small stand-in for the deployed model (River's
multinomial naive Bayes on bags of words, trained on TFNS train; the worker only sees its
predictions, so any model will do) answers every text, and every event carries its
feedback. Each event feeds the detectors exactly what the worker's agents feed them: the
input's token count, the prediction's confidence, and the joined label and prediction.

- **stationary**: TFNS valid rows drawn at random (with replacement).
- **crypto**: TFNS valid rows, then at a known position surge_crypto comments
  (Negative->Bearish, Positive->Bullish): new inputs, new labels, a model that fails.
- **label_swap**: TFNS valid rows, then the same rows with Bearish and Bullish swapped in
  the feedback: a class-conditional change that only the labels reveal.

Three detector sets see the same events: the worker's (``DriftConfig.from_settings``),
River's ``ADWIN()`` at default settings on the same statistics, and an always-fire
baseline. ``false_alarms_per_10k`` counts alarms on the stationary streams;
``detection_delay`` is the mean number of events from the shift to the first alarm
(a missed shift counts as the whole post-shift stretch and is reported in ``misses``).
No broker is involved: this measures the statistics, not the transport.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from dataclasses import dataclass
from pathlib import Path

from schemas.tasks import get_task
from streams.drift import DriftConfig, DriftMonitor
from streams.join import input_tokens
from streamtune.core.settings import Settings

DATA = Path(__file__).resolve().parents[2] / "data"
TASK = "tfns-sentiment"
SEEDS = (1, 2, 3, 4, 5)
STATIONARY_EVENTS = 20_000
PRE_SHIFT = 3_000
POST_SHIFT = 1_500


@dataclass(frozen=True)
class Event:
    """What the worker learns about one interaction."""

    tokens: int
    confidence: float
    label: int
    predicted: int


def _rows(path: Path, text: str, label: str, mapping: dict[str, int] | None = None) -> list:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        value = row[label]
        out.append((row[text], mapping[value] if mapping else int(value)))
    return out


def stand_in_answers() -> dict[str, list[tuple[str, int, list[float]]]]:
    """``(text, label, probabilities)`` for TFNS valid and surge_crypto, from the stand-in
    model trained on TFNS train. The integration tests publish these as predictions."""
    from river import feature_extraction, naive_bayes

    model = feature_extraction.BagOfWords(lowercase=True) | naive_bayes.MultinomialNB(alpha=1.0)
    for text, label in _rows(DATA / "tfns" / "train.csv", "text", "label"):
        model.learn_one(text, label)
    labels = range(get_task(TASK).num_labels)

    def answer(rows: list) -> list[tuple[str, int, list[float]]]:
        out = []
        for text, label in rows:
            probs = model.predict_proba_one(text)
            vector = [float(probs.get(k, 0.0)) for k in labels]
            total = sum(vector)
            out.append((text, label, [p / total for p in vector]))
        return out

    crypto_labels = {"Negative": 0, "Positive": 1}
    return {
        "tfns": answer(_rows(DATA / "tfns" / "valid.csv", "text", "label")),
        "crypto": answer(
            _rows(
                DATA / "surge_crypto" / "sentiment.csv", "Comment Text", "Sentiment", crypto_labels
            )
        ),
    }


def _events() -> tuple[list[Event], list[Event]]:
    """What the worker learns from each answered text."""

    def events(answers: list[tuple[str, int, list[float]]]) -> list[Event]:
        out = []
        for text, label, probs in answers:
            predicted = max(range(len(probs)), key=probs.__getitem__)
            out.append(Event(input_tokens(text), probs[predicted], label, predicted))
        return out

    answers = stand_in_answers()
    return events(answers["tfns"]), events(answers["crypto"])


def _swap(event: Event) -> Event:
    label = {0: 1, 1: 0}.get(event.label, event.label)
    return Event(event.tokens, event.confidence, label, event.predicted)


def _alarms(detector: DriftMonitor | None, events: list[Event]) -> list[int]:
    """Indices of the events after which the detector set raised at least one alarm."""
    if detector is None:  # the always-fire baseline
        return list(range(len(events)))
    out = []
    for i, event in enumerate(events):
        hits = detector.observe_input(event.tokens)
        hits += detector.observe_prediction(event.confidence)
        hits += detector.observe_labelled(event.label, event.predicted)
        if hits:
            out.append(i)
    return out


def _evaluate(config: DriftConfig | None, tfns: list[Event], crypto: list[Event]) -> dict:
    num_labels = get_task(TASK).num_labels

    def monitor() -> DriftMonitor | None:
        return None if config is None else DriftMonitor(TASK, config, num_labels)

    false_alarms = 0
    stationary_events = 0
    delays: dict[str, list[int]] = {"crypto": [], "label_swap": []}
    misses = 0
    for seed in SEEDS:
        rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
        stream = rng.choices(tfns, k=STATIONARY_EVENTS)
        false_alarms += len(_alarms(monitor(), stream))
        stationary_events += len(stream)
        pre = rng.choices(tfns, k=PRE_SHIFT)
        shifted = {
            "crypto": rng.choices(crypto, k=POST_SHIFT),
            "label_swap": [_swap(e) for e in rng.choices(tfns, k=POST_SHIFT)],
        }
        for name, post in shifted.items():
            alarms = [i - PRE_SHIFT for i in _alarms(monitor(), pre + post) if i >= PRE_SHIFT]
            if alarms:
                delays[name].append(alarms[0])
            else:
                misses += 1
                delays[name].append(POST_SHIFT)
    every = [d for values in delays.values() for d in values]
    return {
        "false_alarms_per_10k": round(false_alarms * 10_000 / stationary_events, 3),
        "detection_delay": round(sum(every) / len(every), 1),
        "delay_crypto": round(sum(delays["crypto"]) / len(delays["crypto"]), 1),
        "delay_label_swap": round(sum(delays["label_swap"]) / len(delays["label_swap"]), 1),
        "misses": misses,
    }


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    """Evaluate the worker's detectors and both baselines on the same streams."""
    began = time.monotonic()
    tfns, crypto = _events()
    ours = _evaluate(DriftConfig.from_settings(settings), tfns, crypto)
    adwin = _evaluate(DriftConfig.river_default(), tfns, crypto)
    always = _evaluate(None, tfns, crypto)
    return {
        "bench": "drift",
        "stationary_events": STATIONARY_EVENTS * len(SEEDS),
        "shifts": 2 * len(SEEDS),
        **ours,
        **{f"adwin_default_{key}": value for key, value in adwin.items()},
        **{f"always_fire_{key}": value for key, value in always.items()},
        "meets_bar": ours["false_alarms_per_10k"] <= 1.0
        and ours["detection_delay"] <= adwin["detection_delay"],
        "seconds": round(time.monotonic() - began, 1),
    }
