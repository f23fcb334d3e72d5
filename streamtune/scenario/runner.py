"""Replay an adaptation scenario through the real processes and score it prequentially.

Shared by ``streamtune demo`` (which narrates it), ``streamtune bench adapt`` (which adds the
baselines) and the end-to-end test. The task's bootstrap adapter is published first, so the
run starts from the model a user would deploy. Every interaction is answered by serve before
its feedback can reach training, so the accuracy of the predictions in stream order is
prequential (test-then-train) by construction. An event serve never answered counts as wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas.messages import AdapterEvent, AdapterManifest, DriftEvent, JobStatus, Prediction
from schemas.topics import DRIFT_EVENTS, MODEL_EVENTS, TRAIN_JOBS, TRAIN_STATUS
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_topic
from streamtune.local_service import LocalService
from streamtune.model_updates.history import history
from streamtune.replay import ReplayRow, replay
from streamtune.scenario.build import Scenario
from streamtune.scenario.collector import PredictionCollector

TASK = "tfns-sentiment"
ENDED = ("finished", "rejected", "superseded", "failed")
#: Seconds after an interaction that its feedback (the true label) is sent.
FEEDBACK_DELAY_S = 1.0


@dataclass
class Run:
    """What one replay through the processes produced."""

    predictions: dict[str, Prediction] = field(default_factory=dict)
    drift_events: list[DriftEvent] = field(default_factory=list)
    statuses: list[JobStatus] = field(default_factory=list)
    published: list[AdapterEvent] = field(default_factory=list)
    start_version: str = "base"
    #: Every adapter manifest published during the run, oldest first (with its gate figures).
    manifests: list[AdapterManifest] = field(default_factory=list)
    jobs: int = 0
    sent: int = 0
    seconds: float = 0.0

    def answer(self, prefix: str, row: ReplayRow) -> Prediction | None:
        return self.predictions.get(f"{prefix}-{row.line}")

    def hits(self, rows: list[ReplayRow], prefix: str) -> list[bool]:
        """Per event in stream order: was the served answer right (unanswered: wrong)."""
        out = []
        for row in rows:
            p = self.answer(prefix, row)
            out.append(p is not None and p.label == row.label)
        return out

    def ended(self, state: str) -> int:
        return sum(1 for s in self.statuses if s.state == state)

    @property
    def promoted(self) -> int:
        """Adapters published by train jobs (the bootstrap adapter is not counted)."""
        return sum(1 for e in self.published if e.version != self.start_version)

    @property
    def rejected(self) -> int:
        return self.ended("rejected")

    @property
    def superseded(self) -> int:
        return self.ended("superseded")

    @property
    def first_drift(self) -> DriftEvent | None:
        return min(self.drift_events, key=lambda e: e.ts_ms, default=None)

    def adapted_versions(self) -> set[str]:
        """Versions published after the first drift event: trained on what it announced."""
        drift = self.first_drift
        if drift is None:
            return set()
        return {e.version for e in self.published if e.ts_ms >= drift.ts_ms}

    def first_adapted_answer(self) -> Prediction | None:
        adapted = self.adapted_versions()
        answers = [p for p in self.predictions.values() if p.adapter_version in adapted]
        return min(answers, key=lambda p: p.ts_ms, default=None)

    def seconds_drift_to_adapted_answer(self) -> float | None:
        """From the first drift event to the first answer served by an adapter trained after
        it (None if there never was one)."""
        drift, answer = self.first_drift, self.first_adapted_answer()
        if drift is None or answer is None:
            return None
        return round((answer.ts_ms - drift.ts_ms) / 1000, 1)


async def _read(settings: Settings, topic: str) -> list[bytes]:
    return [r.value for r in await read_topic(settings, topic) if r.value is not None]


async def _refresh(settings: Settings, run: Run, collector: PredictionCollector) -> None:
    for _, p in collector.received:
        run.predictions.setdefault(p.interaction_id, p)  # the first answer is the prequential one
    run.drift_events = [
        DriftEvent.from_bytes(v) for v in await _read(settings, settings.topic(DRIFT_EVENTS))
    ]
    run.statuses = [
        JobStatus.from_bytes(v) for v in await _read(settings, settings.topic(TRAIN_STATUS))
    ]
    run.published = [
        e
        for e in (
            AdapterEvent.from_bytes(v) for v in await _read(settings, settings.topic(MODEL_EVENTS))
        )
        if e.kind == "published"
    ]
    run.jobs = len(await _read(settings, settings.topic(TRAIN_JOBS)))


def _rows(
    scenario: Scenario, run: Run, stop_when: Callable[[Run], bool] | None, then: int,
    feedback: list[int | None] | None = None,
) -> Iterator[ReplayRow]:  # fmt: skip
    """The scenario's rows; with ``stop_when``, only until it holds and ``then`` rows more.
    With ``feedback``, each row carries the label its feedback will give (None: none)."""
    extra = None
    for row in scenario.rows:
        if feedback is not None:
            row = ReplayRow(row.line, row.text, feedback[row.line], row.entity)
        if extra is not None:
            if extra >= then:
                return
            extra += 1
        elif stop_when is not None and stop_when(run):
            extra = 0
        yield row


async def _replay_and_watch(
    settings: Settings, scenario: Scenario, service: LocalService, run: Run, *, rate: float,
    prefix: str, feedback_delay_s: float, on_tick: Callable[[Run], None] | None, settle_s: float,
    stop_when: Callable[[Run], bool] | None, then: int, feedback: list[int | None] | None,
) -> Run:  # fmt: skip
    collector = PredictionCollector(settings)
    await collector.start()
    began = time.monotonic()
    try:
        sending = asyncio.create_task(
            replay(
                settings, _rows(scenario, run, stop_when, then, feedback), task=TASK, rate=rate,
                feedback_fraction=1.0, feedback_delay_s=feedback_delay_s, id_prefix=prefix,
                seed=0, progress=False,
            )
        )  # fmt: skip
        last_tick = 0.0
        while not sending.done():
            await asyncio.wait({sending}, timeout=1.0)
            service.check()
            await _refresh(settings, run, collector)
            if on_tick is not None and time.monotonic() - last_tick >= 5.0:
                last_tick = time.monotonic()
                on_tick(run)
        stats = sending.result()
        run.sent = stats.interactions
        deadline = time.monotonic() + 120
        while (
            len({p.interaction_id for _, p in collector.received}) < run.sent
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.5)
        end = time.monotonic() + settle_s
        while time.monotonic() < end:  # let a job that is running finish and report
            await _refresh(settings, run, collector)
            if run.jobs and sum(run.ended(s) for s in ENDED) >= run.jobs:
                break
            await asyncio.sleep(1.0)
        await _refresh(settings, run, collector)
        run.manifests, _ = await history(settings, TASK)
    finally:
        await collector.stop()
    run.seconds = time.monotonic() - began
    return run


def run_scenario(
    settings: Settings, scenario: Scenario, log_dir: Path, *, rate: float, prefix: str = "adapt",
    feedback_delay_s: float = FEEDBACK_DELAY_S, on_tick: Callable[[Run], None] | None = None,
    settle_s: float = 5.0, start_version: str = "base",
    stop_when: Callable[[Run], bool] | None = None, then: int = 0,
    feedback: list[int | None] | None = None,
) -> Run:  # fmt: skip
    """Start worker, serve and train; replay the scenario with feedback; stop them; the run.

    ``start_version`` names the adapter live before the run (the bootstrap's); with
    ``stop_when``, the replay ends ``then`` events after the condition first holds. Every
    event is labelled unless ``feedback`` (see :mod:`streamtune.scenario.feedback`) says which
    label each gets, or none."""
    run = Run(start_version=start_version)
    with LocalService(settings, log_dir) as service:
        return asyncio.run(
            _replay_and_watch(
                settings, scenario, service, run, rate=rate, prefix=prefix,
                feedback_delay_s=feedback_delay_s, on_tick=on_tick, settle_s=settle_s,
                stop_when=stop_when, then=then, feedback=feedback,
            )
        )  # fmt: skip


def scenario_settings(settings: Settings, **extra: object) -> Settings:
    """The settings a scenario runs with: the defaults, serving only the scenario's task."""
    return Settings(**{**settings.model_dump(), "serve_tasks": TASK, **extra})
