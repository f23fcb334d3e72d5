"""Drift through the real worker: none on a stationary TFNS replay, then an event soon after
the stream switches to surge_crypto comments (new inputs, a model that fails on them)."""

from __future__ import annotations

import asyncio
import random

import pytest

from schemas import DriftEvent, Feedback, Interaction, Prediction
from schemas.limits import MAX_TEXT_CHARS
from streamtune.bench.drift_bench import stand_in_answers
from tests.examples import TS
from tests.worker_helpers import (
    WorkerProcess,
    decoded,
    delete_prefixed_topics,
    publish,
    task_state,
    wait_for,
    wait_ready,
    worker_env,
)

pytestmark = pytest.mark.integration
TASK = "tfns-sentiment"
STATIONARY = 1000
SHIFTED = 300
#: The shift must be caught within this many shifted events. `streamtune bench drift`
#: measures the default detectors at 25-50 events on this shift (mean over seeds, with a
#: 50-event feedback delay the test does not have); 100 is twice the slowest of those and a
#: third of the stretch, so a detector that fires late (or only by chance) fails here.
DETECT_WITHIN = 100
CHUNK = 25  # shifted events published, then counted, at a time up to DETECT_WITHIN


def events(prefix: str, answers: list[tuple[str, int, list[float]]]) -> list:
    out = []
    for n, (text, label, probs) in enumerate(answers):
        i = f"{prefix}-{n}"
        predicted = max(range(3), key=probs.__getitem__)
        out += [
            ("interactions", i, Interaction(interaction_id=i, task=TASK, text=text, ts_ms=TS)),
            (
                "predictions",
                i,
                Prediction(
                    interaction_id=i, task=TASK, label=predicted, probs=probs,
                    adapter_version="stand-in", model_id="nb", latency_ms=1.0, ts_ms=TS,
                ),
            ),
            ("feedback", i, Feedback(interaction_id=i, task=TASK, label=label, ts_ms=TS)),
        ]  # fmt: skip
    return out


def test_drift_event_on_a_shift_and_none_on_a_stationary_replay(topics, tmp_path):
    settings = topics
    answers = stand_in_answers()
    rng = random.Random(2024)
    stationary = rng.choices(answers["tfns"], k=STATIONARY)
    fits = [a for a in answers["crypto"] if len(a[0]) <= MAX_TEXT_CHARS]
    shifted = rng.choices(fits, k=SHIFTED)
    worker = WorkerProcess(
        worker_env(settings, window_size=10_000), tmp_path / "worker.log"
    ).start()

    async def counted(n: int):
        async def check():
            state = await task_state(settings, TASK)
            return state if state is not None and state.examples >= n else None

        return await wait_for(check, 60, f"{n} examples in the windows", worker)

    async def go():
        await wait_ready(settings, worker)
        await publish(settings, events("calm", stationary))
        before = await counted(STATIONARY)
        calm = await decoded(settings, "drift-events", DriftEvent)
        # The first DETECT_WITHIN shifted events in chunks, each counted before the next is
        # sent: the worker has then seen all of them, whatever order it read the topics in.
        shift_events = events("shift", shifted)
        for end in range(CHUNK, DETECT_WITHIN + 1, CHUNK):
            await publish(settings, shift_events[3 * (end - CHUNK) : 3 * end])
            within = await counted(STATIONARY + end)
        await publish(settings, shift_events[3 * DETECT_WITHIN :])

        async def fired():
            return await decoded(settings, "drift-events", DriftEvent)

        after = await wait_for(fired, 60, "a drift event after the shift", worker)
        return before, calm, within, after

    try:
        before, calm, within, after = asyncio.run(go())
    finally:
        worker.stop()
        asyncio.run(delete_prefixed_topics(settings))

    assert calm == [], [(e.statistic, e.position) for e in calm]
    first = after[0]
    assert first.task == TASK and first.adapter_version == "stand-in"
    assert first.position > before.observations  # after everything stationary was seen
    assert first.statistic in {
        "error_rate",
        "input_tokens",
        "confidence_down",
        "confidence_up",
    } or (first.statistic.startswith("label_prior:"))
    assert first.detector in {"adwin", "page_hinkley"}
    # Caught within the first DETECT_WITHIN shifted events: at or before the observation
    # count the worker had reached once it had counted all of them.
    assert first.position <= within.observations, (first.position, within.observations)
