"""Replay the adaptation scenario through the real pipeline and score it prequentially.

Shared by ``streamtune demo`` (which narrates it) and ``streamtune bench adapt`` (which
adds the baselines). Every interaction is answered by serve before its feedback can reach
training, so the accuracy of the predictions in stream order is prequential
(test-then-train) by construction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from schemas.messages import DriftEvent, JobStatus, Prediction
from schemas.topics import DRIFT_EVENTS, TRAIN_JOBS, TRAIN_STATUS
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_topic
from streamtune.local_service import LocalService
from streamtune.replay import replay
from streamtune.scenario.build import Scenario
from streamtune.scenario.collector import PredictionCollector

TASK = "tfns-sentiment"

#: Settings the scenario runs with; each is an ordinary STREAMTUNE_* setting.
SCENARIO_SETTINGS: dict[str, object] = {
    "serve_tasks": TASK,
    # Small windows and a short cooldown: the stream is short.
    "window_size": 150,
    "train_min_examples": 80,
    "train_cooldown_s": 5.0,
    "holdout_fraction": 0.25,  # a gate on a few dozen examples is noise
    "rehearsal_fraction": 1.0,  # as many older examples as new ones: remember the old domain
    "train_learning_rate": 1e-3,  # jobs fine-tune the live adapter on a few hundred examples
    # A domain shift is a deliberate trade: allow the anchor (old-domain) score to give a little.
    "gate_anchor_tolerance": 0.1,
    "gate_anchor_size": 300,
}


@dataclass
class Run:
    """What one replay through the pipeline produced."""

    predictions: dict[str, Prediction] = field(default_factory=dict)
    drift_events: list[DriftEvent] = field(default_factory=list)
    statuses: list[JobStatus] = field(default_factory=list)
    jobs: int = 0
    sent: int = 0
    seconds: float = 0.0

    def hits(self, scenario: Scenario, prefix: str) -> list[bool | None]:
        """Per event in stream order: was the served answer right (None: unanswered)."""
        out: list[bool | None] = []
        for row in scenario.rows:
            p = self.predictions.get(f"{prefix}-{row.line}")
            out.append(None if p is None else p.label == row.label)
        return out

    @property
    def promoted(self) -> int:
        return sum(len(s.adapter_versions) for s in self.statuses if s.state == "finished")

    @property
    def rejected(self) -> int:
        return sum(1 for s in self.statuses if s.state == "rejected")


async def _read(settings: Settings, topic: str) -> list[bytes]:
    return [r.value for r in await read_topic(settings, topic) if r.value is not None]


async def _replay_and_watch(
    settings: Settings, scenario: Scenario, service: LocalService, *, rate: float, prefix: str,
    feedback_delay_s: float, on_tick: Callable[[Run], None] | None, settle_s: float,
) -> Run:  # fmt: skip
    run = Run()
    collector = PredictionCollector(settings)
    await collector.start()
    began = time.monotonic()
    try:
        sending = asyncio.create_task(
            replay(
                settings, iter(scenario.rows), task=TASK, rate=rate, feedback_fraction=1.0,
                feedback_delay_s=feedback_delay_s, id_prefix=prefix, seed=0, progress=False,
            )
        )  # fmt: skip
        while not sending.done():
            await asyncio.wait({sending}, timeout=5.0)
            service.check()
            await _refresh(settings, run, collector)
            if on_tick is not None:
                on_tick(run)
        stats = sending.result()
        run.sent = stats.interactions
        deadline = time.monotonic() + 120
        while (
            len({p.interaction_id for _, p in collector.received}) < run.sent
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.5)
        await asyncio.sleep(settle_s)  # let a job that is running finish and report
        await _refresh(settings, run, collector)
    finally:
        await collector.stop()
    run.seconds = time.monotonic() - began
    return run


async def _refresh(settings: Settings, run: Run, collector: PredictionCollector) -> None:
    for _, p in collector.received:
        run.predictions.setdefault(p.interaction_id, p)  # the first answer is the prequential one
    run.drift_events = [
        DriftEvent.from_bytes(v) for v in await _read(settings, settings.topic(DRIFT_EVENTS))
    ]
    run.statuses = [
        JobStatus.from_bytes(v) for v in await _read(settings, settings.topic(TRAIN_STATUS))
    ]
    run.jobs = len(await _read(settings, settings.topic(TRAIN_JOBS)))


def run_scenario(
    settings: Settings, scenario: Scenario, log_dir: Path, *, rate: float, prefix: str = "adapt",
    feedback_delay_s: float = 1.0, on_tick: Callable[[Run], None] | None = None, settle_s: float = 5.0,
) -> Run:  # fmt: skip
    """Start worker, serve and train; replay the scenario with feedback; stop them; the run."""
    with LocalService(settings, log_dir) as service:
        return asyncio.run(
            _replay_and_watch(
                settings, scenario, service, rate=rate, prefix=prefix,
                feedback_delay_s=feedback_delay_s, on_tick=on_tick, settle_s=settle_s,
            )
        )  # fmt: skip


def scenario_settings(settings: Settings, **extra: object) -> Settings:
    return Settings(**{**settings.model_dump(), **SCENARIO_SETTINGS, **extra})
