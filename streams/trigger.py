"""The trigger policy: when a task gets a train job, and which offset ranges it carries.

Triggers are a full (or aged) window, a drift event, and an optional schedule. They do not
pile up: a trigger that cannot fire yet becomes the task's single *pending* trigger (the
strongest wins: drift, then window, then schedule), and fires once the policy allows:

- at most one job in flight per task: a job stays in flight until the trainer reports its
  end on ``train-status``, or ``job_timeout_ms`` passes. A **drift** does not wait: its job
  replaces the one in flight, whose data the drift made stale (the trainer cancels it as
  ``superseded`` as soon as it sees the drift job);
- a cooldown between two jobs of a task (drift jobs ignore it);
- a minimum number of new examples since the last job (``min_examples``), or, for the first
  job after a drift, in the new regime (``drift_min_examples``, counted from the located
  change, or from the detection when the statistic cannot locate it).

**Regimes.** A drift starts a new regime where the change began: a detector of labelled
examples estimates how many of the newest examples come after the change (``since``, see
:func:`streams.drift.examples_since_change`), and the open window is cut there
(:func:`streams.windows.split_open`). Without an estimate the regime starts at the window
that was open when the drift fired. Either way that window is closed at once, so the
newest examples are trained on. Every job trains on the task's examples
of the current regime, newest first up to ``regime_max_examples``, so that no label is
wasted on small sequential jobs; its holdout is the newest examples (``holdout_fraction``,
at least one), which the train ranges exclude. Its rehearsal ranges are sampled from
windows before the regime, against forgetting.

>>> from streams.windows import TaskState, WindowConfig, add_example
>>> cfg = TriggerConfig(min_examples=4, cooldown_ms=0, job_timeout_ms=60_000)
>>> wcfg = WindowConfig(window_size=5, holdout_fraction=0.2)
>>> state = TaskState("tfns-sentiment")
>>> for offset in range(5):
...     _ = add_example(state, wcfg, partition=0, offset=offset, now_ms=0)
>>> job = evaluate(state, cfg, now_ms=1_700_000_000_000, labelled_topic="labelled")
>>> job.reason, [(r.start, r.end) for r in job.train_ranges], [(r.start, r.end) for r in job.holdout_ranges]
('window', [(0, 4)], [(4, 5)])
>>> evaluate(state, cfg, now_ms=1_700_000_000_001, labelled_topic="labelled") is None  # in flight
True
>>> for offset in range(5, 10):
...     _ = add_example(state, wcfg, partition=0, offset=offset, now_ms=0)
>>> job_ended(state, job.job_id)
>>> second = evaluate(state, cfg, now_ms=1_700_000_000_002, labelled_topic="labelled")
>>> [(r.start, r.end) for r in second.train_ranges]  # the whole regime, not just the new window
[(0, 8)]
>>> [(r.start, r.end) for r in second.holdout_ranges]
[(8, 10)]
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.messages import OffsetRange, TrainJob
from streams.windows import TaskState, Window, close_open, split_open

if TYPE_CHECKING:
    from streamtune.core.layers import TriggerSettings

#: Regime windows kept at most (their count is also capped by ``regime_max_examples``).
MAX_REGIME_WINDOWS = 64
#: Trigger reasons, strongest first.
STRENGTH = {"drift": 3, "window": 2, "schedule": 1}


@dataclass(frozen=True)
class TriggerConfig:
    """The policy's knobs (see the module docstring)."""

    min_examples: int = 100
    cooldown_ms: int = 0
    job_timeout_ms: int = 3_600_000
    schedule_ms: int = 0
    holdout_fraction: float = 0.2
    rehearsal_fraction: float = 0.5
    rehearsal_windows: int = 16
    drift_min_examples: int = 60  # of the new regime, counted from the estimated change
    drift_settle_examples: int = 1000
    regime_max_examples: int = 2000
    on_drift: bool = True  # False: drift is reported but starts no job (scheduled retraining)
    tail_size: int | None = None  # offsets a window closed here keeps (WindowConfig.tail_size)

    @classmethod
    def from_settings(cls, trigger: TriggerSettings, tail_size: int | None = None) -> TriggerConfig:
        """The policy as configured (``settings.trigger``); ``tail_size`` is the window
        config's (:attr:`streams.windows.WindowConfig.tail_size`).

        >>> from streamtune.core.layers import TriggerSettings
        >>> TriggerConfig.from_settings(TriggerSettings(cooldown_s=2), tail_size=38).cooldown_ms
        2000
        """
        t = trigger
        return cls(
            min_examples=t.min_examples,
            cooldown_ms=int(t.cooldown_s * 1000),
            job_timeout_ms=int(t.job_timeout_s * 1000),
            schedule_ms=int(t.schedule_s * 1000),
            holdout_fraction=t.holdout_fraction,
            rehearsal_fraction=t.rehearsal_fraction,
            rehearsal_windows=t.rehearsal_windows,
            drift_min_examples=t.drift_min_examples,
            drift_settle_examples=t.drift_settle_examples,
            regime_max_examples=t.regime_max_examples,
            on_drift=t.on_drift,
            tail_size=tail_size,
        )


def trigger(
    state: TaskState, reason: str, drift_event_id: str | None = None, *, settle_examples: int = 0,
    since: int | None = None, tail_size: int | None = None,
) -> None:  # fmt: skip
    """Record a trigger; it coalesces with one already pending (the strongest wins).

    A drift also starts a new regime (see the module docstring): ``since`` examples ago
    when the detector located the change, else at the window open now. Not when the last
    regime started fewer than ``settle_examples`` examples ago: one shift is usually seen
    by several statistics in turn, and each must not restart the regime."""
    if (
        reason == "drift"
        and state.drift_mark
        and state.examples - state.drift_mark < settle_examples
    ):
        return
    if state.pending is None or STRENGTH[reason] > STRENGTH[state.pending]:
        state.pending = reason
    if reason == "drift":
        if drift_event_id is not None:
            state.pending_drift_event = drift_event_id
        # Examples of the new regime so far: those after the located change, else none yet
        # (the job then waits for examples that arrived after the detection).
        begun = 0
        if since is not None and state.open is not None:
            begun = since if split_open(state, since, tail_size) else min(since, state.open.count)
        close_open(state, tail_size)
        newest = state.closed[-1] if state.closed else None
        state.regime_start = newest.id if newest is not None else state.next_window_id
        state.drift_mark = state.examples - begun
        # Untrained windows before the change are the old regime's: rehearsal material, not
        # new examples that would trigger window jobs of their own.
        older = [w for w in state.closed if w.id < state.regime_start]
        if older:
            state.closed = [w for w in state.closed if w.id >= state.regime_start]
            state.history = sorted([*state.history, *older], key=lambda w: w.id)


def adapter_published(state: TaskState, version: str) -> None:
    """An adapter for the task was announced. A job may publish twice (its fast head, then
    its LoRA adapter), so only the job's end on ``train-status`` ends its flight."""
    state.adapter_version = version


def job_ended(state: TaskState, job_id: str) -> None:
    """The trainer reported the end of a job: it is no longer in flight, adapter or not."""
    if state.in_flight is not None and state.in_flight["job_id"] == job_id:
        state.in_flight = None


def evaluate(
    state: TaskState, cfg: TriggerConfig, *, now_ms: int, labelled_topic: str
) -> TrainJob | None:
    """Apply the policy now; return the job to publish, if one is due."""
    if state.in_flight and now_ms - state.in_flight["created_ms"] >= cfg.job_timeout_ms:
        state.in_flight = None  # the trainer never reported: it died or the job was lost
    if state.closed:
        trigger(state, "window")
    new_examples = sum(w.count for w in state.closed) + (state.open.count if state.open else 0)
    if cfg.schedule_ms and new_examples and now_ms - state.last_job_ms >= cfg.schedule_ms:
        trigger(state, "schedule")
    if state.pending == "drift" and not cfg.on_drift:
        state.pending = "window" if state.closed else None
        state.pending_drift_event = None
    if state.pending is None:
        return None
    drift = state.pending == "drift"
    if state.in_flight is not None and not drift:
        return None
    if not drift and state.last_job_ms and now_ms - state.last_job_ms < cfg.cooldown_ms:
        return None
    if drift:
        # The regime's first window was mostly written before the drift was detected: wait
        # for examples that arrived after it, so the holdout is of the new regime.
        if state.examples - state.drift_mark < cfg.drift_min_examples:
            return None
    elif new_examples < cfg.min_examples:
        return None
    # Only now, with the job due, may the open window close: closing it on every check
    # would cut the regime into slivers.
    if state.pending != "window" and state.open is not None and state.open.count:
        close_open(state, cfg.tail_size)
    pool = _regime_pool(state, cfg)
    if sum(w.count for w in pool) < 2:
        return None
    return _build(state, cfg, pool, now_ms, labelled_topic)


def _regime_pool(state: TaskState, cfg: TriggerConfig) -> list[Window]:
    """The current regime's windows, oldest first, the newest up to ``regime_max_examples``."""
    windows = [w for w in [*state.history, *state.closed] if w.id >= state.regime_start]
    pool: list[Window] = []
    total = 0
    for window in reversed(windows):
        if pool and total + window.count > cfg.regime_max_examples:
            break
        pool.insert(0, window)
        total += window.count
    return pool


def _build(
    state: TaskState, cfg: TriggerConfig, pool: list[Window], now_ms: int, labelled_topic: str
) -> TrainJob:
    seq = state.jobs_emitted + 1
    job_id = f"{state.task}:{seq}"
    total = sum(w.count for w in pool)
    # At most one window's worth: the next job trains on the holdout, and a job that held
    # back more of the newest examples would answer the stream from older ones.
    wanted = min(max(1, round(cfg.holdout_fraction * total)), total - 1, max(w.count for w in pool))
    # The newest examples: whole windows, newest first, then the newest part of the next
    # one (from its tail), so each partition's holdout is one range at its end.
    holdout_n = 0
    holdout_start: dict[int, int] = {}
    for window in reversed(pool):
        need = wanted - holdout_n
        if need <= 0:
            break
        if need >= window.count:
            firsts = [(partition, start) for partition, (start, _) in window.ranges.items()]
            holdout_n += window.count
        else:
            firsts = window.tail[max(0, len(window.tail) - need) :]
            holdout_n += len(firsts)
        for partition, offset in firsts:
            holdout_start[partition] = min(offset, holdout_start.get(partition, offset))
        if need < window.count:
            break
    train: dict[int, list[int]] = {}
    for window in pool:
        for partition, (start, end) in window.ranges.items():
            if partition in holdout_start:
                end = min(end, holdout_start[partition])
            if end <= start:
                continue
            # Consecutive windows hold all of the task's examples in between, so one
            # range per partition covers them (other tasks' records are filtered out).
            have = train.get(partition)
            train[partition] = [min(have[0], start), max(have[1], end)] if have else [start, end]
    train_n = total - holdout_n
    job = TrainJob(
        job_id=job_id,
        tasks=[state.task],
        reason=state.pending or "manual",  # type: ignore[arg-type]
        labelled_topic=labelled_topic,
        train_ranges=[
            OffsetRange(partition=p, start=s, end=e) for p, (s, e) in sorted(train.items())
        ],
        rehearsal_ranges=_rehearsal(state, cfg, job_id, train_n),
        holdout_ranges=[
            OffsetRange(
                partition=p, start=start, end=max(w.ranges[p][1] for w in pool if p in w.ranges)
            )
            for p, start in sorted(holdout_start.items())
        ],
        parent_version=state.adapter_version,
        created_ts_ms=now_ms,
        train_examples=train_n,
        holdout_examples=holdout_n,
        drift_event_id=state.pending_drift_event if state.pending == "drift" else None,
    )
    trained = {w.id for w in pool}
    known = {w.id for w in state.history}
    state.closed = [w for w in state.closed if w.id not in trained]
    history = sorted([*state.history, *(w for w in pool if w.id not in known)], key=lambda w: w.id)
    # Keep the regime's windows (they are trained on again) and a few older ones to rehearse.
    regime = [w for w in history if w.id >= state.regime_start]
    older = [w for w in history if w.id < state.regime_start]
    state.history = (older[-cfg.rehearsal_windows :] if cfg.rehearsal_windows else []) + regime[
        -MAX_REGIME_WINDOWS:
    ]
    state.jobs_emitted = seq
    state.in_flight = {"job_id": job_id, "created_ms": now_ms}
    state.last_job_ms = now_ms
    state.pending = None
    state.pending_drift_event = None
    return job


def _rehearsal(
    state: TaskState, cfg: TriggerConfig, job_id: str, train_n: int
) -> list[OffsetRange]:
    """Random slices of older windows, about ``rehearsal_fraction`` of the train size.

    Seeded by the job id, so that a job rebuilt after a crash has the same sample.
    """
    budget = round(cfg.rehearsal_fraction * train_n)
    before = [w for w in state.history if w.id < state.regime_start]
    if budget <= 0 or not before:
        return []
    seed = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    windows = list(before)
    rng.shuffle(windows)
    out = []
    for window in windows:
        if budget <= 0:
            break
        share = min(1.0, budget / window.count)
        for partition, (start, end) in sorted(window.ranges.items()):
            length = max(1, math.ceil(share * (end - start)))
            first = start + rng.randrange(0, end - start - length + 1)
            out.append(OffsetRange(partition=partition, start=first, end=first + length))
        budget -= math.ceil(share * window.count)
    return out
