"""Drift statistics per task, watched by River detectors.

Four statistics, each with its own detectors and settings:

``error_rate``
    1 when a joined example's prediction was wrong, else 0. ADWIN watches the rate; a
    one-sided Page-Hinkley test (the second detector) catches abrupt rises sooner.
``confidence``
    The top probability of each prediction. ADWIN is two-sided, so a drop *and* a rise
    fire; the event's statistic says which (``confidence_down`` / ``confidence_up``).
``input_tokens``
    ``log(1 + tokens)`` of each interaction: the serving tokenizer's count that its
    prediction carries, or whitespace tokens without one (:mod:`streams.join`). A shift of
    the input distribution.
``label_prior:<k>``
    Whether a joined example has label ``k``, one ADWIN per label. Their deltas share
    ``label_delta`` (a Bonferroni split), so that many labels do not mean many false alarms.

Every detector checks after each observation (``clock=1``) and stays quiet for ``grace``
observations after a start or a detection. A detection resets that statistic only.

A detection of a statistic of labelled examples (error rate, label prior) also says **where
the change happened**: ``since`` is the number of newest examples after the most likely
change point of the statistic's recent values (:func:`examples_since_change`), so the
trigger can start the new regime there, not at the window that happened to be open.

State survives a restart by replay: :meth:`DriftMonitor.replay` feeds the tail of the
worker's observation stream, read back from Kafka, to fresh detectors with alarms muted.
River objects are never pickled.

>>> import random
>>> rng = random.Random(7)
>>> monitor = DriftMonitor("tfns-sentiment", DriftConfig(grace=100), num_labels=3)
>>> fired = []
>>> for i in range(4000):
...     wrong = rng.random() < (0.15 if i < 2000 else 0.6)
...     fired += monitor.observe_labelled(label=0, predicted=1 if wrong else 0)
>>> [(d.statistic, d.detector) for d in fired][:1]
[('error_rate', 'adwin')]
>>> 2000 < fired[0].position < 2100
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from river import drift

from streams.events import Observations

if TYPE_CHECKING:
    from streamtune.core.layers import DriftSettings


class _Detector(Protocol):
    drift_detected: bool

    def update(self, x: float) -> Any: ...


@dataclass(frozen=True)
class DriftConfig:
    """Detector settings; the defaults are the calibrated ones (``streamtune bench drift``)."""

    error_delta: float = 0.0005
    error_ph_threshold: float | None = 30.0
    error_ph_delta: float = 0.02
    confidence_delta: float = 0.0005
    input_delta: float = 0.0005
    label_delta: float = 0.0005
    grace: int = 200
    clock: int = 1
    split_label_delta: bool = True

    @classmethod
    def from_settings(cls, drift: DriftSettings) -> DriftConfig:
        """The detectors as configured (``STREAMTUNE_DRIFT_*``; ``settings.drift``).

        >>> from streamtune.core.layers import DriftSettings
        >>> DriftConfig.from_settings(DriftSettings(grace=50)).grace
        50
        """
        return cls(
            error_delta=drift.error_delta,
            error_ph_threshold=drift.error_ph_threshold,
            error_ph_delta=drift.error_ph_delta,
            confidence_delta=drift.confidence_delta,
            input_delta=drift.input_delta,
            label_delta=drift.label_delta,
            grace=drift.grace,
        )

    @classmethod
    def river_default(cls) -> DriftConfig:
        """River's ``ADWIN()`` as it comes, on every statistic: the benchmark's baseline."""
        return cls(
            error_delta=0.002,
            error_ph_threshold=None,
            error_ph_delta=0.0,
            confidence_delta=0.002,
            input_delta=0.002,
            label_delta=0.002,
            grace=10,
            clock=32,
            split_label_delta=False,
        )


@dataclass(frozen=True)
class Detection:
    """One detector fired on one statistic at ``position`` (observations of the task).

    ``since``: the estimated number of the task's newest labelled examples after the
    change (None for statistics of inputs and predictions, and when there is too little
    to tell)."""

    statistic: str
    detector: str
    value: float
    position: int
    since: int | None = None


#: Recent values a statistic keeps for locating a change point.
CHANGE_POINT_HISTORY = 512
#: Fewest values on each side of a change point.
CHANGE_POINT_MIN_SIDE = 5


def examples_since_change(
    values: Sequence[float], min_side: int = CHANGE_POINT_MIN_SIDE
) -> int | None:
    """How many of the newest ``values`` come after their most likely single mean shift.

    The least-squares change point: the split ``t`` that maximises
    ``t (n - t) / n * (mean(before) - mean(after))**2``. Detectors fire some time after a
    shift; this says where it began.

    >>> examples_since_change([0.0] * 100 + [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    8
    >>> examples_since_change([1.0, 0.0, 1.0]) is None  # too few values to tell
    True
    """
    n = len(values)
    if n < 2 * min_side:
        return None
    total = math.fsum(values)
    best_score, best_t, left = -1.0, 0, 0.0
    for t in range(1, n - min_side + 1):
        left += values[t - 1]
        if t < min_side:
            continue
        gap = left / t - (total - left) / (n - t)
        score = t * (n - t) / n * gap * gap
        if score > best_score:
            best_score, best_t = score, t
    return n - best_t


class Statistic:
    """One number stream watched by one or more detectors, with a grace period.

    >>> stat = Statistic("x", {"adwin": lambda: drift.ADWIN(clock=1)}, grace=50)
    >>> hits = [stat.update(0.0 if i < 500 else 1.0) for i in range(600)]
    >>> [i for i, hit in enumerate(hits) if hit][:1]
    [510]
    """

    def __init__(
        self,
        name: str,
        detectors: Mapping[str, Callable[[], _Detector]],
        grace: int,
        two_sided_name: bool = False,
        rises_only: bool = False,
        locates_change: bool = False,
    ) -> None:
        self.name = name
        self.grace = grace
        self.two_sided_name = two_sided_name
        self.rises_only = rises_only
        self.locates_change = locates_change
        self._factories = dict(detectors)
        self._reset()

    def _reset(self) -> None:
        self._detectors = {name: make() for name, make in self._factories.items()}
        self._n = 0
        self._recent = 0.0  # fast-moving mean: the level after a change
        self._mean = 0.0  # mean since the last reset: the level before it
        self._values: deque[float] = deque(maxlen=CHANGE_POINT_HISTORY)

    def update(self, x: float) -> tuple[str, str, float, int | None] | None:
        """Feed one value; on a detection return ``(statistic, detector, new level, since)``,
        ``since`` being where the change began when the statistic locates it (see
        :func:`examples_since_change`), else None."""
        self._n += 1
        if self.locates_change:
            self._values.append(x)
        self._recent += (x - self._recent) / min(self._n, 20)
        before = self._mean
        self._mean += (x - self._mean) / self._n
        fired = None
        for name, detector in self._detectors.items():
            detector.update(x)
            if fired is None and detector.drift_detected:
                fired = name
        if fired is None or self._n <= self.grace:
            return None
        level = self._recent
        statistic = self.name
        if self.rises_only and level < before:
            self._reset()  # it got better: a new baseline, not an alarm
            return None
        if self.two_sided_name:
            statistic += "_up" if level >= before else "_down"
        since = examples_since_change(self._values) if self.locates_change else None
        self._reset()
        return statistic, fired, level, since


class DriftMonitor:
    """All drift statistics of one task. Feed it observations; it returns detections."""

    def __init__(self, task: str, config: DriftConfig, num_labels: int) -> None:
        self.task = task
        self.config = config
        self.position = 0
        self.version: str | None = None  # the adapter that answered last
        c = config

        def adwin(delta: float) -> Callable[[], _Detector]:
            return lambda: drift.ADWIN(delta=delta, clock=c.clock, grace_period=c.grace)

        error = {"adwin": adwin(c.error_delta)}
        if c.error_ph_threshold is not None:
            error["page_hinkley"] = lambda: drift.PageHinkley(
                min_instances=c.grace,
                delta=c.error_ph_delta,
                threshold=c.error_ph_threshold,
                mode="up",
            )
        # Only a rising error rate is a drift: a falling one is the adaptation working.
        self.error = Statistic("error_rate", error, c.grace, rises_only=True, locates_change=True)
        self.confidence = Statistic(
            "confidence", {"adwin": adwin(c.confidence_delta)}, c.grace, two_sided_name=True
        )
        self.inputs = Statistic("input_tokens", {"adwin": adwin(c.input_delta)}, c.grace)
        per_label = c.label_delta / num_labels if c.split_label_delta else c.label_delta
        self.labels = [
            Statistic(f"label_prior:{k}", {"adwin": adwin(per_label)}, c.grace, locates_change=True)
            for k in range(num_labels)
        ]

    def observe_input(self, tokens: int) -> list[Detection]:
        """An interaction's text had ``tokens`` tokens."""
        self.position += 1
        return self._hits([self.inputs.update(math.log1p(tokens))])

    def observe_prediction(self, confidence: float) -> list[Detection]:
        """A prediction had this top probability."""
        self.position += 1
        return self._hits([self.confidence.update(confidence)])

    def observe_labelled(self, label: int, predicted: int | None) -> list[Detection]:
        """A joined example: its true label and, when known, the predicted one."""
        self.position += 1
        hits = [stat.update(1.0 if k == label else 0.0) for k, stat in enumerate(self.labels)]
        if predicted is not None:
            hits.append(self.error.update(0.0 if predicted == label else 1.0))
        return self._hits(hits)

    def model_changed(self) -> None:
        """A new adapter answers: the statistics of the model's own behaviour (error rate,
        confidence) start a new baseline, with a grace period, instead of reporting the swap
        itself as a drift."""
        self.error._reset()
        self.confidence._reset()

    def observe(self, obs: Observations) -> list[Detection]:
        """Feed what the join saw of this task in one batch."""
        out: list[Detection] = []
        for tokens in obs.inputs:
            out += self.observe_input(tokens)
        for prediction in obs.predictions:
            if prediction.adapter_version != self.version:
                if self.version is not None:
                    self.model_changed()
                self.version = prediction.adapter_version
            out += self.observe_prediction(prediction.confidence)
        for item in obs.labelled:
            out += self.observe_labelled(item.label, item.predicted)
        return out

    def replay(self, records: Iterable[Observations]) -> int:
        """Rebuild state from observation records, muting alarms; returns observations fed."""
        before = self.position
        for obs in records:
            self.observe(obs)
        return self.position - before

    def _hits(self, results: list[tuple[str, str, float, int | None] | None]) -> list[Detection]:
        return [
            Detection(statistic, detector, level, self.position, since)
            for statistic, detector, level, since in filter(None, results)
        ]
