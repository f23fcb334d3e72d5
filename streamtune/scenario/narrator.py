"""Tell what happens during a scenario run, as it happens: drift, fast heads, LoRA adapters,
gate rejections, supersessions and the accuracy they lead to (``streamtune demo``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamtune.scenario.build import Scenario
from streamtune.scenario.runner import Run


class Narrator:
    """Call with the run every few seconds; it prints what is new since the last call."""

    def __init__(self, scenario: Scenario, prefix: str, out: Callable[[str], None] = print) -> None:
        self.scenario = scenario
        self.prefix = prefix
        self.out = out
        self.began = time.monotonic()
        self._drifts = 0
        self._published: set[str] = set()
        self._ended: set[str] = set()

    def _say(self, text: str) -> None:
        self.out(f"      [{time.monotonic() - self.began:5.0f}s] {text}")

    def __call__(self, run: Run) -> None:
        for event in sorted(run.drift_events, key=lambda e: e.ts_ms)[self._drifts :]:
            self._say(
                f"drift detected on {event.task}: {event.statistic} by {event.detector} "
                f"(observation {event.position} of the task's stream"
                + (
                    ""
                    if event.examples_since_change is None
                    else f"; the change began {event.examples_since_change} labelled examples ago"
                )
                + ")"
            )
        self._drifts = len(run.drift_events)
        for event in run.published:
            if event.version in self._published or event.version == run.start_version:
                continue
            self._published.add(event.version)
            kind = (
                "fast head (new head on the live encoder's features)"
                if event.version.endswith("-head")
                else "LoRA adapter"
            )
            self._say(
                f"{kind} {event.version} passed the gate, signed and published; serve hot-swaps it"
            )
        for status in run.statuses:
            if status.job_id in self._ended or status.state not in (
                "rejected",
                "superseded",
                "failed",
            ):
                continue
            self._ended.add(status.job_id)
            self._say(f"job {status.job_id} {status.state}: {(status.message or '')[:160]}")
        answered = [r for r in self.scenario.rows if run.answer(self.prefix, r) is not None]
        recent = answered[-100:]
        if recent:
            right = sum(run.answer(self.prefix, r).label == r.label for r in recent)  # type: ignore[union-attr]
            live = run.answer(self.prefix, recent[-1]).adapter_version  # type: ignore[union-attr]
            self._say(
                f"answered {len(answered):>5} | serving {live} | accuracy of the last "
                f"{len(recent)} answers {right / len(recent):.0%}"
            )
