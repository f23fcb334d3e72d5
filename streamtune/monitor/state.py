"""What the monitor knows, folded from the records of every topic. Nothing here talks to Kafka.

Feed records in time order with :meth:`MonitorState.add` (base topic name, key, value,
record timestamp); read a JSON-ready picture with :meth:`MonitorState.snapshot`. The live
dashboard, ``streamtune status`` and ``streamtune report`` all read the same picture.

Record timestamps are the producer's: one is taken as at most ``max_ahead_ms`` past the
monitor's clock, and the throughput chart spans at most ``_MAX_POINTS`` buckets back from
the newest, so one record stamped in 1970 or 2100 costs nothing.

Every table keyed by what a producer writes is bounded, so that a flood of unique ids or
cashtags cannot exhaust the monitor: the answers and labels awaiting each other (100k per
task), the entities of recent interactions (50k), and the sentiment-by-entity table
(``max_entities``, least recently seen out first, counted in ``entities_evicted``).

Prequential accuracy and macro-F1 come from feedback joined here to the first answer to
each interaction (the worker's ``labelled`` topic holds the same join, but leaves out the
prediction when it came too late for its wait).

Accuracy while feedback is delayed is estimated the way NannyML's CBPE does: the expected
accuracy of a batch of predictions is the mean of their calibrated confidence. Calibration
is per task and adapter version, from the answers whose feedback has arrived so far (confidence bins,
shrunk towards the raw confidence while a bin holds few examples). Each block of
predictions keeps the estimate made when it was answered; once its feedback arrives the
realised accuracy sits beside it, and their mean absolute difference is reported.

>>> from schemas.messages import Feedback, Prediction
>>> state = MonitorState(window=4, cbpe_block=4, bucket_s=1.0)
>>> for i in range(8):
...     p = Prediction(interaction_id=f"i{i}", task="tfns-sentiment", label=1,
...                    probs=[0.1, 0.8, 0.1], adapter_version="base", model_id="m",
...                    latency_ms=12.0, ts_ms=1_700_000_000_000 + i * 100)
...     state.add("predictions", p.interaction_id.encode(), p.to_bytes(), p.ts_ms)
>>> for i in range(8):
...     fb = Feedback(interaction_id=f"i{i}", task="tfns-sentiment", label=1 if i % 4 else 0,
...                   ts_ms=1_700_000_001_000 + i)
...     state.add("feedback", fb.interaction_id.encode(), fb.to_bytes(), fb.ts_ms)
>>> snap = state.snapshot()
>>> task = snap["tasks"]["tfns-sentiment"]
>>> task["accuracy_now"], task["estimated_now"], task["cbpe"]["realised"]
(0.75, 0.8, [0.75, 0.75])
>>> task["cbpe"]["mae"]
0.05
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import limits
from schemas.base import DecodeError
from schemas.fields import clamp_ts, now_ms
from schemas.messages import (
    SEED_VERSION,
    AdapterEvent,
    AdapterManifest,
    Alert,
    DeadLetter,
    DriftEvent,
    Feedback,
    Interaction,
    JobStatus,
    LabelledExample,
    Prediction,
    TrainJob,
)
from schemas.tasks import get_task
from schemas.topics import (
    ALERTS,
    DEAD_LETTER,
    DRIFT_EVENTS,
    FEEDBACK,
    INTERACTIONS,
    LABELLED,
    MODEL_EVENTS,
    MODEL_UPDATES,
    PREDICTIONS,
    TRAIN_JOBS,
    TRAIN_STATUS,
)
from streams.entities import EntityExtractor

#: Topics the monitor reads (every one but the adapters' chunks, which it skips by key).
MONITORED = (
    INTERACTIONS,
    PREDICTIONS,
    FEEDBACK,
    LABELLED,
    DRIFT_EVENTS,
    TRAIN_JOBS,
    TRAIN_STATUS,
    MODEL_UPDATES,
    MODEL_EVENTS,
    ALERTS,
    DEAD_LETTER,
)

_BINS = 10
_SHRINK = 10.0  # pseudo-examples at the raw confidence in each calibration bin
_MAX_POINTS = 100_000
_MAX_LIST = 1000


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or math.isnan(x) else round(x, digits)


def _smooth(values: list[float], width: int) -> list[float]:
    """Trailing moving average.

    >>> _smooth([0, 10, 0, 10], 2)
    [0.0, 5.0, 5.0, 5.0]
    """
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= width:
            total -= values[i - width]
        out.append(round(total / min(i + 1, width), 3))
    return out


def macro_f1(pairs: list[tuple[int, int]]) -> float:
    """Macro-F1 over the labels that occur as truth or prediction in ``(true, pred)`` pairs.

    >>> macro_f1([(0, 0), (1, 1), (1, 0)])
    0.6667
    """
    labels = {t for t, _ in pairs} | {p for _, p in pairs}
    scores = []
    for label in labels:
        tp = sum(1 for t, p in pairs if t == label and p == label)
        fp = sum(1 for t, p in pairs if t != label and p == label)
        fn = sum(1 for t, p in pairs if t == label and p != label)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return round(sum(scores) / len(scores), 4) if scores else 0.0


class Calibration:
    """Confidence -> probability of being right, per adapter version, from judged answers.

    Only the newest ``window`` judged answers of a version count, so that the calibration
    follows the stream when its difficulty changes.

    >>> cal = Calibration(window=50)
    >>> cal.calibrated("v1", 0.9)          # nothing seen: the raw confidence
    0.9
    >>> for _ in range(90):
    ...     cal.observe("v1", 0.95, correct=False)
    >>> round(cal.calibrated("v1", 0.92), 3)   # an over-confident adapter is corrected
    0.153
    """

    def __init__(self, window: int = 500) -> None:
        self.window = window
        self._bins: dict[str, list[list[int]]] = {}
        self._recent: dict[str, deque[tuple[int, bool]]] = {}

    def observe(self, version: str, confidence: float, correct: bool) -> None:
        bins = self._bins.setdefault(version, [[0, 0] for _ in range(_BINS)])
        recent = self._recent.setdefault(version, deque())
        index = min(_BINS - 1, int(confidence * _BINS))
        recent.append((index, correct))
        bins[index][0] += 1
        bins[index][1] += int(correct)
        if len(recent) > self.window:
            old, was_correct = recent.popleft()
            bins[old][0] -= 1
            bins[old][1] -= int(was_correct)

    def calibrated(self, version: str, confidence: float) -> float:
        bins = self._bins.get(version)
        if bins is None:
            return confidence
        n, right = bins[min(_BINS - 1, int(confidence * _BINS))]
        return (right + _SHRINK * confidence) / (n + _SHRINK)


@dataclass
class _Block:
    """A block of predictions of one task: the estimate made then, the truth found later."""

    start_ms: int
    end_ms: int = 0
    n: int = 0
    estimated_sum: float = 0.0
    raw_sum: float = 0.0
    labelled: int = 0
    correct: int = 0

    def realised(self) -> float | None:
        # Feedback may cover only a sample of the block; a third of it is a fair estimate.
        if self.labelled < min(self.n, max(10, self.n // 3)):
            return None
        return self.correct / self.labelled


@dataclass
class _Answer:
    """The first answer to an interaction, waiting for its feedback."""

    block: _Block
    label: int
    confidence: float
    version: str


def wanted(topic: str, key: bytes | None) -> bool:
    """Whether a record of base topic ``topic`` can change the picture.

    On ``model-updates`` only the live records (keyed by the bare task) do: history and chunk
    records (``TASK@...``) never do, and the chunks of every adapter ever published stay on
    that compacted topic, so a reader skips them before it holds them.

    >>> wanted("model-updates", b"tfns-sentiment"), wanted("model-updates", b"tfns-sentiment@v1#0")
    (True, False)
    """
    return topic != MODEL_UPDATES or (bool(key) and b"@" not in (key or b""))


def _remember(memory: OrderedDict[str, Any], key: str, value: Any, limit: int = 100_000) -> None:
    memory[key] = value
    if len(memory) > limit:
        memory.popitem(last=False)


@dataclass
class _TaskView:
    window: deque[tuple[int, int]]
    confidences: deque[float]
    points: dict[str, list[Any]] = field(
        default_factory=lambda: {"t": [], "accuracy": [], "macro_f1": []}
    )
    estimate_points: dict[str, list[Any]] = field(
        default_factory=lambda: {"t": [], "estimated": []}
    )
    blocks: list[_Block] = field(default_factory=list)
    pending: OrderedDict[str, _Answer] = field(default_factory=OrderedDict)  # awaiting feedback
    early: OrderedDict[str, int] = field(default_factory=OrderedDict)  # labels before answers
    answered: OrderedDict[str, bool] = field(default_factory=OrderedDict)
    labelled: int = 0
    predictions: int = 0
    last_bucket: int = -1
    last_estimate_bucket: int = -1


class MonitorState:
    """Running aggregates over the topics; ``add`` records, ``snapshot`` the picture."""

    def __init__(
        self,
        *,
        window: int = 200,
        cbpe_block: int = 100,
        bucket_s: float = 1.0,
        calibration_window: int = 200,
        entities: EntityExtractor | None = None,
        max_ahead_ms: int = limits.MAX_AHEAD_MS,
        max_entities: int = 10_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        # The worker's extractor (cashtags, the aliases file): the entity view names what
        # the alerts name.
        self.extractor = entities or EntityExtractor()
        self.window = window
        self.max_ahead_ms = max_ahead_ms
        self.clock = clock
        self.cbpe_block = cbpe_block
        self.bucket_ms = max(1, int(bucket_s * 1000))
        self.calibration_window = calibration_window
        #: Buckets in the throughput's moving average (about 5 s).
        self.smooth_buckets = max(1, round(5.0 / bucket_s))
        self.counts: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.buckets: dict[int, dict[str, Any]] = {}
        self.tasks: dict[str, _TaskView] = {}
        self.calibration: dict[str, Calibration] = {}
        self.drift: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.live: dict[str, str] = {}
        self.promoted: dict[str, set[str]] = {}
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.alerts: list[dict[str, Any]] = []
        self.alert_kinds: Counter[str] = Counter()
        self.entities_of: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: Labels predicted per entity, least recently seen first (at most ``max_entities``).
        self.entity_labels: OrderedDict[str, Counter[str]] = OrderedDict()
        self.max_entities = max_entities
        self.entities_evicted = 0
        self.lag: dict[str, int] = {}
        self.lag_points: dict[str, list[Any]] = {"t": []}
        self.last_ts_ms = 0
        #: Called with ``(topic, message)`` for every valid record (the monitor's /metrics).
        self.listener: Callable[[str, Any], None] | None = None

    # --- input ---------------------------------------------------------------------------
    def add(self, topic: str, key: bytes | None, value: bytes | None, ts_ms: int) -> None:
        """Fold one record of base topic ``topic`` (no prefix) with its record timestamp."""
        ts_ms = clamp_ts(ts_ms, self.clock(), self.max_ahead_ms)
        self.last_ts_ms = max(self.last_ts_ms, ts_ms)
        if topic == MODEL_UPDATES:
            self._model_update(key, value, ts_ms)
            return
        if value is None:
            return
        handler = _HANDLERS.get(topic)
        if handler is None:
            return
        model, method = handler
        try:
            message = model.from_bytes(value)
        except DecodeError:
            self.invalid[topic] += 1
            return
        self.counts[topic] += 1
        getattr(self, method)(message, ts_ms)
        if self.listener is not None:
            self.listener(topic, message)

    def set_lag(self, lag: dict[str, int], ts_ms: int) -> None:
        """Lag per consumer group, sampled from the broker."""
        self.lag = dict(lag)
        pts = self.lag_points
        pts["t"].append(ts_ms)
        for group, value in lag.items():
            series = pts.setdefault(group, [None] * (len(pts["t"]) - 1))
            series.append(value)
        for group, series in pts.items():
            if group != "t" and len(series) < len(pts["t"]):
                series.append(None)
        if len(pts["t"]) > 3600:
            for series in pts.values():
                del series[: len(series) - 3600]

    def _bucket(self, ts_ms: int) -> dict[str, Any]:
        b = ts_ms // self.bucket_ms
        bucket = self.buckets.get(b)
        if bucket is None:
            bucket = self.buckets[b] = {"interactions": 0, "predictions": 0, "latencies": []}
            if len(self.buckets) > _MAX_POINTS:
                del self.buckets[min(self.buckets)]
        return bucket

    def _task(self, task: str) -> _TaskView:
        view = self.tasks.get(task)
        if view is None:
            view = self.tasks[task] = _TaskView(
                deque(maxlen=self.window), deque(maxlen=self.window)
            )
        return view

    def _on_interaction(self, msg: Interaction, ts_ms: int) -> None:
        self._bucket(ts_ms)["interactions"] += 1
        names = self.extractor.extract(msg.text, msg.entity)
        if names:
            self.entities_of[msg.interaction_id] = names
            if len(self.entities_of) > 50_000:
                self.entities_of.popitem(last=False)

    def _on_prediction(self, msg: Prediction, ts_ms: int) -> None:
        bucket = self._bucket(ts_ms)
        bucket["predictions"] += 1
        if len(bucket["latencies"]) < 500:
            bucket["latencies"].append(msg.latency_ms)
        view = self._task(msg.task)
        view.predictions += 1
        names = self.entities_of.get(msg.interaction_id, ())
        if names:
            self._count_entities(names, get_task(msg.task).labels[msg.label])
        if msg.interaction_id in view.answered:
            return  # answered again after a rebalance: the first answer is the prequential one
        _remember(view.answered, msg.interaction_id, True)
        raw = msg.confidence
        cal = self.calibration.setdefault(msg.task, Calibration(self.calibration_window))
        estimated = cal.calibrated(msg.adapter_version, raw)
        view.confidences.append(estimated)
        if not view.blocks or view.blocks[-1].n >= self.cbpe_block:
            view.blocks.append(_Block(start_ms=ts_ms))
            if len(view.blocks) > _MAX_LIST * 10:
                del view.blocks[0]
        block = view.blocks[-1]
        block.n += 1
        block.end_ms = ts_ms
        block.estimated_sum += estimated
        block.raw_sum += raw
        answer = _Answer(block, msg.label, raw, msg.adapter_version)
        truth = view.early.pop(msg.interaction_id, None)
        if truth is None:
            _remember(view.pending, msg.interaction_id, answer)
        else:
            self._judge(msg.task, view, answer, truth, ts_ms)
        b = ts_ms // self.bucket_ms
        if b != view.last_estimate_bucket:
            view.last_estimate_bucket = b
            view.estimate_points["t"].append(ts_ms)
            view.estimate_points["estimated"].append(None)
        view.estimate_points["estimated"][-1] = _round(
            sum(view.confidences) / len(view.confidences)
        )

    def _count_entities(self, names: tuple[str, ...], label: str) -> None:
        """Count a predicted label for each entity; the least recently seen go beyond the cap."""
        table = self.entity_labels
        for entity in names:
            counts = table.get(entity)
            if counts is None:
                counts = table[entity] = Counter()
            else:
                table.move_to_end(entity)
            counts[label] += 1
        while len(table) > self.max_entities:
            table.popitem(last=False)
            self.entities_evicted += 1

    def _on_feedback(self, msg: Feedback, ts_ms: int) -> None:
        # The monitor joins feedback to the first answer itself, so that every label counts
        # even when the worker's join gave up waiting for a slow prediction.
        view = self._task(msg.task)
        answer = view.pending.pop(msg.interaction_id, None)
        if answer is None:
            _remember(view.early, msg.interaction_id, msg.label)
        else:
            self._judge(msg.task, view, answer, msg.label, ts_ms)

    def _judge(self, task: str, view: _TaskView, answer: _Answer, truth: int, ts_ms: int) -> None:
        correct = answer.label == truth
        view.labelled += 1
        view.window.append((truth, answer.label))
        self.calibration.setdefault(task, Calibration(self.calibration_window)).observe(
            answer.version, answer.confidence, correct
        )
        answer.block.labelled += 1
        answer.block.correct += int(correct)
        b = ts_ms // self.bucket_ms
        if b != view.last_bucket:
            view.last_bucket = b
            for name in view.points:
                view.points[name].append(None)
        pairs = list(view.window)
        view.points["t"][-1] = ts_ms
        view.points["accuracy"][-1] = _round(sum(t == p for t, p in pairs) / len(pairs))
        view.points["macro_f1"][-1] = macro_f1(pairs)

    def _on_labelled(self, msg: LabelledExample, ts_ms: int) -> None:
        pass  # counted; the training data's store, while accuracy comes from feedback

    def _on_drift(self, msg: DriftEvent, ts_ms: int) -> None:
        self.drift.append(
            {
                "ts_ms": msg.ts_ms,
                "task": msg.task,
                "detector": msg.detector,
                "statistic": msg.statistic,
                "value": _round(msg.value),
                "position": msg.position,
                "examples_since_change": msg.examples_since_change,
                "adapter_version": msg.adapter_version,
            }
        )
        del self.drift[:-_MAX_LIST]

    def _event(self, ts_ms: int, task: str, version: str, kind: str, detail: str = "") -> None:
        self.timeline.append(
            {"ts_ms": ts_ms, "task": task, "version": version, "kind": kind, "detail": detail}
        )
        del self.timeline[:-_MAX_LIST]

    def _model_update(self, key: bytes | None, value: bytes | None, ts_ms: int) -> None:
        if not wanted(MODEL_UPDATES, key):
            return  # history and chunk records; the live record is keyed by the bare task
        task = (key or b"").decode("utf-8", "replace")
        self.counts[MODEL_UPDATES] += 1
        if value is None:  # unsigned: every consumer ignores it, and so does the picture
            self._event(ts_ms, task, SEED_VERSION, "rejected", "tombstone: unsigned, ignored")
            return
        try:
            manifest = AdapterManifest.from_bytes(value, max_bytes=len(value))
        except DecodeError:
            self.invalid[MODEL_UPDATES] += 1
            return
        if manifest.revert_to_base:
            self._promote(task, SEED_VERSION, manifest.created_ts_ms, "rolled_back", "signed")
            return
        seen = manifest.version in self.promoted.get(task, set())
        metric = ", ".join(f"{k}={v:.3f}" for k, v in sorted(manifest.metrics.items())[:3])
        kind = "rolled_back" if seen else "promoted"
        self._promote(task, manifest.version, manifest.created_ts_ms, kind, metric)

    def _promote(self, task: str, version: str, ts_ms: int, kind: str, detail: str) -> None:
        previous = self.live.get(task)
        if previous == version:
            return
        if previous is not None:
            self._event(ts_ms, task, previous, "superseded", f"by {version}")
        self.live[task] = version
        self.promoted.setdefault(task, set()).add(version)
        self._event(ts_ms, task, version, kind, detail)

    def _on_model_event(self, msg: AdapterEvent, ts_ms: int) -> None:
        if msg.kind == "published":
            return  # the live record on model-updates says it, with its metrics
        detail = msg.source if msg.error is None else f"{msg.error}: {msg.reason or ''}"[:200]
        if msg.kind == "rolled_back":
            self._promote(msg.task, msg.version, msg.ts_ms, "rolled_back", detail)
        else:
            self._event(msg.ts_ms, msg.task, msg.version, msg.kind, detail)

    def _on_train_job(self, msg: TrainJob, ts_ms: int) -> None:
        self.jobs[msg.job_id] = {
            "job_id": msg.job_id,
            "tasks": msg.tasks,
            "reason": msg.reason,
            "created_ts_ms": msg.created_ts_ms,
            "train_examples": msg.train_examples,
            "state": "queued",
            "progress": 0.0,
            "attempt": 0,
            "message": "",
            "ts_ms": msg.created_ts_ms,
        }
        while len(self.jobs) > _MAX_LIST:
            self.jobs.popitem(last=False)

    def _on_job_status(self, msg: JobStatus, ts_ms: int) -> None:
        job = self.jobs.setdefault(
            msg.job_id,
            {"job_id": msg.job_id, "tasks": msg.tasks, "reason": "?", "created_ts_ms": msg.ts_ms},
        )
        job.update(state=msg.state, attempt=msg.attempt, ts_ms=msg.ts_ms)
        if msg.progress is not None:
            job["progress"] = msg.progress
        if msg.message:
            job["message"] = msg.message
        if msg.state == "rejected":
            for task in msg.tasks:
                self._event(msg.ts_ms, task, msg.job_id, "gate_rejected", msg.message or "")
        elif msg.state == "failed":
            for task in msg.tasks:
                self._event(msg.ts_ms, task, msg.job_id, "job_failed", msg.message or "")
        elif msg.state == "superseded":
            for task in msg.tasks:
                self._event(msg.ts_ms, task, msg.job_id, "job_superseded", msg.message or "")

    def _on_alert(self, msg: Alert, ts_ms: int) -> None:
        self.alert_kinds[msg.kind] += 1
        self.alerts.append(
            {
                "ts_ms": msg.ts_ms,
                "kind": msg.kind,
                "entity": msg.entity,
                "task": msg.task,
                "share": _round(msg.share),
                "baseline_share": _round(msg.baseline_share),
                "count": msg.count,
                "message": msg.message,
            }
        )
        del self.alerts[:-_MAX_LIST]

    def _on_dead_letter(self, msg: DeadLetter, ts_ms: int) -> None:
        self.dead_letters[msg.error] += 1

    # --- output --------------------------------------------------------------------------
    def snapshot(self, max_points: int | None = None) -> dict[str, Any]:
        """A JSON-ready picture; ``max_points`` keeps only the newest points of each series."""

        def tail(values: list[Any]) -> list[Any]:
            return values if max_points is None else values[-max_points:]

        keys = tail(sorted(self.buckets))
        seconds = self.bucket_ms / 1000
        # Every bucket from the first to the last (empty ones are zero), as a trailing
        # moving average: bursts of batched answers would otherwise read as noise. At most
        # as many buckets as are kept, back from the newest: a record stamped decades ago
        # must not make a range of a billion.
        most = min(max_points or _MAX_POINTS, _MAX_POINTS)
        span = list(range(max(keys[0], keys[-1] - most + 1), keys[-1] + 1)) if keys else []
        throughput = {
            "t": [k * self.bucket_ms for k in span],
            "predictions_per_s": _smooth(
                [self.buckets.get(k, {}).get("predictions", 0) / seconds for k in span],
                self.smooth_buckets,
            ),
            "interactions_per_s": _smooth(
                [self.buckets.get(k, {}).get("interactions", 0) / seconds for k in span],
                self.smooth_buckets,
            ),
        }
        latency: dict[str, list[Any]] = {"t": [], "p50_ms": [], "p95_ms": []}
        for k in keys:
            values = sorted(self.buckets[k]["latencies"])
            if values:
                latency["t"].append(k * self.bucket_ms)
                latency["p50_ms"].append(_round(values[len(values) // 2], 1))
                latency["p95_ms"].append(
                    _round(values[min(len(values) - 1, int(0.95 * len(values)))], 1)
                )
        tasks = {}
        for name, view in sorted(self.tasks.items()):
            pairs = list(view.window)
            done = [(b, b.realised()) for b in view.blocks if b.n]
            realised = [(b, r) for b, r in done if r is not None]
            errors = [abs(b.estimated_sum / b.n - r) for b, r in realised]
            raw_errors = [abs(b.raw_sum / b.n - r) for b, r in realised]
            tasks[name] = {
                "predictions": view.predictions,
                "labelled": view.labelled,
                "accuracy_now": _round(sum(t == p for t, p in pairs) / len(pairs))
                if pairs
                else None,
                "macro_f1_now": macro_f1(pairs) if pairs else None,
                "estimated_now": _round(sum(view.confidences) / len(view.confidences))
                if view.confidences
                else None,
                "series": {k: tail(v) for k, v in view.points.items()},
                "estimate_series": {k: tail(v) for k, v in view.estimate_points.items()},
                "cbpe": {
                    "t": tail([b.end_ms for b, _ in realised]),
                    "estimated": tail([_round(b.estimated_sum / b.n) for b, _ in realised]),
                    "realised": tail([_round(r) for _, r in realised]),
                    "blocks": len(realised),
                    "awaiting_feedback": len(done) - len(realised),
                    "mae": _round(sum(errors) / len(errors)) if errors else None,
                    "raw_mae": _round(sum(raw_errors) / len(raw_errors)) if raw_errors else None,
                },
            }
        entities = sorted(self.entity_labels.items(), key=lambda kv: -sum(kv[1].values()))[:12]
        return {
            "last_ts_ms": self.last_ts_ms,
            "bucket_s": seconds,
            "window": self.window,
            "counts": dict(self.counts),
            "invalid": dict(self.invalid),
            "dead_letters": dict(self.dead_letters),
            "throughput": throughput,
            "latency": latency,
            "tasks": tasks,
            "drift": self.drift[-200:],
            "timeline": self.timeline[-300:],
            "live": dict(self.live),
            "jobs": list(self.jobs.values())[-50:],
            "alerts": self.alerts[-100:],
            "alert_kinds": dict(self.alert_kinds),
            "entities_evicted": self.entities_evicted,
            "entities": {
                entity: {"n": sum(c.values()), **{k: v for k, v in c.items()}}
                for entity, c in entities
            },
            "lag": dict(self.lag),
            "lag_series": {k: tail(v) for k, v in self.lag_points.items()},
        }


_HANDLERS: dict[str, tuple[Any, str]] = {
    INTERACTIONS: (Interaction, "_on_interaction"),
    PREDICTIONS: (Prediction, "_on_prediction"),
    FEEDBACK: (Feedback, "_on_feedback"),
    LABELLED: (LabelledExample, "_on_labelled"),
    DRIFT_EVENTS: (DriftEvent, "_on_drift"),
    TRAIN_JOBS: (TrainJob, "_on_train_job"),
    TRAIN_STATUS: (JobStatus, "_on_job_status"),
    MODEL_EVENTS: (AdapterEvent, "_on_model_event"),
    ALERTS: (Alert, "_on_alert"),
    DEAD_LETTER: (DeadLetter, "_on_dead_letter"),
}
