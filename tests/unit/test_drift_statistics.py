"""The drift statistics on synthetic streams: each fires on its shift, none on noise."""

from __future__ import annotations

import random

from streams.drift import DriftConfig, DriftMonitor
from streams.events import LabelledSeen, Observations, PredictionSeen

TASK = "tfns-sentiment"


def monitor() -> DriftMonitor:
    return DriftMonitor(TASK, DriftConfig(), num_labels=3)


def stationary(rng: random.Random, m: DriftMonitor, n: int) -> list:
    hits = []
    for _ in range(n):
        label = rng.choices([0, 1, 2], weights=[15, 20, 65])[0]
        predicted = label if rng.random() < 0.78 else rng.randrange(3)
        hits += m.observe_input(rng.randint(8, 16))
        hits += m.observe_prediction(rng.uniform(0.5, 0.95))
        hits += m.observe_labelled(label, predicted)
    return hits


def test_no_alarm_on_a_stationary_stream():
    rng = random.Random(3)
    assert stationary(rng, monitor(), 3000) == []


def test_a_jump_in_errors_fires_the_error_rate():
    rng = random.Random(4)
    m = monitor()
    stationary(rng, m, 1000)
    hits = []
    for _ in range(300):
        hits += m.observe_labelled(2, rng.choice([0, 1]))
    assert hits and hits[0].statistic == "error_rate"
    assert hits[0].value > 0.5


def test_confidence_fires_in_both_directions():
    for level, name in ((0.3, "confidence_down"), (0.99, "confidence_up")):
        rng = random.Random(5)
        m = monitor()
        for _ in range(800):
            m.observe_prediction(rng.uniform(0.6, 0.8))
        hits = [h for _ in range(300) for h in m.observe_prediction(level)]
        assert [h.statistic for h in hits][:1] == [name]


def test_longer_inputs_fire_the_input_statistic():
    rng = random.Random(6)
    m = monitor()
    for _ in range(800):
        m.observe_input(rng.randint(8, 16))
    hits = [h for _ in range(200) for h in m.observe_input(rng.randint(25, 60))]
    assert hits and hits[0].statistic == "input_tokens" and hits[0].position > 800


def test_a_new_label_prior_fires_a_label_statistic():
    rng = random.Random(7)
    m = monitor()
    for _ in range(1000):
        m.observe_labelled(rng.choices([0, 1, 2], weights=[15, 20, 65])[0], None)
    hits = [h for _ in range(600) for h in m.observe_labelled(rng.choice([0, 1]), None)]
    assert hits and hits[0].statistic.startswith("label_prior:")


def test_replaying_the_tail_rebuilds_the_same_detectors():
    """What a restarted worker does: replay, alarms muted, then carry on."""
    rng = random.Random(8)
    records = []
    for _ in range(60):
        records.append(
            Observations(
                task=TASK,
                inputs=tuple(rng.randint(8, 16) for _ in range(20)),
                predictions=tuple(
                    PredictionSeen(0, rng.uniform(0.6, 0.8), "v1") for _ in range(20)
                ),
                labelled=tuple(
                    LabelledSeen(0, 0, 2, 2 if rng.random() < 0.8 else 0, None, 0)
                    for _ in range(20)
                ),
            )
        )
    shifted = Observations(task=TASK, labelled=(LabelledSeen(0, 0, 2, 0, None, 0),) * 200)
    uninterrupted = monitor()
    for record in records:
        uninterrupted.observe(record)
    rebuilt = monitor()
    assert rebuilt.replay(records) == uninterrupted.position
    assert uninterrupted.observe(shifted) == rebuilt.observe(shifted) != []


def test_a_falling_error_rate_is_not_a_drift_and_a_new_model_starts_a_new_baseline():
    rng = random.Random(3)
    m = monitor()
    # 30% wrong, then 5% wrong: the model got better (an adapter helped): no alarm.
    hits = []
    for n in range(3000):
        wrong = rng.random() < (0.3 if n < 1500 else 0.05)
        hits += m.observe_labelled(0, 1 if wrong else 0)
    assert [h for h in hits if h.statistic == "error_rate"] == []
    # The same fall with a rise in between: the rise is reported.
    m = monitor()
    rises = []
    for n in range(3000):
        wrong = rng.random() < (0.05 if n < 1500 else 0.4)
        rises += m.observe_labelled(0, 1 if wrong else 0)
    assert [h.statistic for h in rises][:1] == ["error_rate"]
    # A new adapter answering resets the model's own statistics (with their grace period).
    m = monitor()
    before = m.error
    for version in ("base", "base", "v1"):
        m.observe(Observations(task=TASK, predictions=(PredictionSeen(0, 0.9, version),)))
    assert m.error is before and m.error._n == 0 and m.version == "v1"


def test_a_detection_of_errors_says_where_the_change_began():
    rng = random.Random(5)
    m = monitor()
    stationary(rng, m, 1000)
    hits, changed = [], 0
    while not hits and changed < 300:
        hits += m.observe_labelled(2, rng.choice([0, 1]) if rng.random() < 0.8 else 2)
        changed += 1
    error = next(h for h in hits if h.statistic == "error_rate")
    # The detector fires some examples after the change; the estimate points back to it.
    assert changed > 10 and abs(error.since - changed) <= 5, (error.since, changed)


def test_statistics_of_inputs_do_not_locate_their_change():
    rng = random.Random(6)
    m = monitor()
    stationary(rng, m, 1000)
    hits = []
    for _ in range(400):
        hits += m.observe_input(rng.randint(60, 90))
    assert hits and all(h.since is None for h in hits)
