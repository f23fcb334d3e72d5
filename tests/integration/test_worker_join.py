"""The feedback join through the real worker (started with Faust's own CLI): out-of-order,
held, duplicate, conflicting, expired and late feedback, and bad input on every source."""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest

from schemas import DeadLetter, Feedback, Interaction, LabelledExample, Prediction
from streams.status import worker_status
from tests.examples import TS
from tests.worker_helpers import (
    WorkerProcess,
    decoded,
    delete_prefixed_topics,
    publish,
    wait_for,
    wait_ready,
    worker_env,
)

pytestmark = pytest.mark.integration
TASK = "tfns-sentiment"


def interaction(i: str) -> tuple[str, str, Interaction]:
    return (
        "interactions",
        i,
        Interaction(interaction_id=i, task=TASK, text=f"text of {i}", ts_ms=TS),
    )


def prediction(i: str, label: int) -> tuple[str, str, Prediction]:
    probs = [0.1, 0.1, 0.1]
    probs[label] = 0.8
    return (
        "predictions",
        i,
        Prediction(
            interaction_id=i, task=TASK, label=label, probs=probs, adapter_version="v3",
            model_id="m", latency_ms=2.0, ts_ms=TS,
        ),
    )  # fmt: skip


def feedback(i: str, label: int) -> tuple[str, str, Feedback]:
    return ("feedback", i, Feedback(interaction_id=i, task=TASK, label=label, ts_ms=TS))


def test_join_handles_order_repeats_expiry_lateness_and_bad_input(topics, tmp_path):
    settings = topics
    env = worker_env(settings, join_ttl_s=2.0)
    worker = WorkerProcess(
        env,
        tmp_path / "faust.log",
        [sys.executable, "-m", "faust", "-A", "streams.app", "worker", "-l", "info"],
    ).start()
    bad_json = b'{"interaction_id": "broken",'
    wrong_type = orjson.dumps({"interaction_id": "x", "task": TASK, "label": "1", "ts_ms": TS})
    unknown_task = orjson.dumps(
        {"interaction_id": "x", "task": "astrology", "label": 1, "probs": [1.0], "adapter_version": "v",
         "model_id": "m", "latency_ms": 1.0, "ts_ms": TS}
    )  # fmt: skip

    async def go():
        await wait_ready(settings, worker)
        await publish(
            settings,
            [
                interaction("in-order"), prediction("in-order", 2), feedback("in-order", 1),
                feedback("fb-first", 0), interaction("fb-first"), prediction("fb-first", 0),
                interaction("before-pred"), feedback("before-pred", 2), prediction("before-pred", 1),
                interaction("dup"), prediction("dup", 1), feedback("dup", 1),
                feedback("dup", 1), feedback("dup", 0),
                feedback("lonely", 1),
                interaction("late"),
                ("interactions", "broken", bad_json),
                ("feedback", "x", wrong_type),
                ("predictions", "x", unknown_task),
                interaction("after-bad"), feedback("after-bad", 0), prediction("after-bad", 0),
            ],
        )  # fmt: skip

        async def expired() -> list[DeadLetter]:
            letters = await decoded(settings, "dead-letter", DeadLetter)
            return [d for d in letters if d.error == "join_expired"]

        await wait_for(expired, 30, "the lonely feedback to expire", worker)
        await publish(settings, [feedback("late", 1)])

        async def late() -> list[DeadLetter]:
            letters = await decoded(settings, "dead-letter", DeadLetter)
            return [d for d in letters if d.error == "late_feedback"]

        await wait_for(late, 30, "the late feedback", worker)

        async def counted() -> dict | None:
            status = await worker_status(settings)
            return status["join"] if status["join"]["late_feedback"] else None

        counts = await wait_for(counted, 30, "the counters", worker)
        labelled = await decoded(settings, "labelled", LabelledExample)
        letters = await decoded(settings, "dead-letter", DeadLetter)
        return counts, labelled, letters

    try:
        counts, labelled, letters = asyncio.run(go())
    finally:
        worker.stop()
        asyncio.run(delete_prefixed_topics(settings))

    by_id = {e.interaction_id: e for e in labelled}
    assert len(labelled) == len(by_id) == 5, [e.interaction_id for e in labelled]
    assert {i: (e.label, e.predicted_label) for i, e in by_id.items()} == {
        "in-order": (1, 2),
        "fb-first": (0, 0),
        "before-pred": (2, 1),  # held until its prediction came
        "dup": (1, 1),  # the first feedback wins
        "after-bad": (0, 0),  # bad input did not stop the agent
    }
    assert by_id["in-order"].adapter_version == "v3"
    errors = sorted((d.error, d.source_topic.removeprefix(settings.topic_prefix)) for d in letters)
    assert errors == [
        ("conflicting_feedback", "feedback"),
        ("invalid_json", "interactions"),
        ("join_expired", "feedback"),
        ("late_feedback", "feedback"),
        ("unknown_task", "predictions"),
        ("validation", "feedback"),
    ]
    broken = next(d for d in letters if d.error == "invalid_json")
    assert broken.raw == bad_json and broken.offset >= 0 and "invalid JSON" in broken.reason
    assert counts["labelled"] == 5
    assert counts["duplicate_feedback"] == 2 and counts["conflicting_feedback"] == 1
    assert counts["expired_feedback"] == 1 and counts["late_feedback"] == 1
