"""The worker's internal records through the real worker: join state left in the changelog
by a worker of the format before is recovered and carried on, and garbage on the internal
topics is dead-lettered while both agents carry on."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka.partitioner import murmur2

from schemas import DeadLetter, Feedback, LabelledExample, Prediction
from schemas.topics import TopicSpec
from streams.status import read_table
from streams.topology import Topology, internal_topic_specs
from streamtune.core.clients import make_producer
from streamtune.core.topic_admin import create_topics
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


def partition_of(key: str, partitions: int) -> int:
    """The partition the default partitioner gives ``key`` (as the worker's sources do)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def prediction(i: str, label: int) -> tuple[str, str, Prediction]:
    probs = [0.1, 0.1, 0.1]
    probs[label] = 0.8
    return (
        "predictions",
        i,
        Prediction(
            interaction_id=i, task=TASK, label=label, probs=probs, adapter_version="v5",
            model_id="m", latency_ms=1.0, ts_ms=TS, token_count=7,
        ),
    )  # fmt: skip


def feedback(i: str, label: int) -> tuple[str, str, Feedback]:
    return ("feedback", i, Feedback(interaction_id=i, task=TASK, label=label, ts_ms=TS))


async def send_raw(settings, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        pending = [await producer.send(t, v, key=k) for t, k, v in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def test_old_join_state_is_recovered_and_bad_internal_records_are_dead_lettered(topics, tmp_path):
    settings = topics
    topology = Topology(settings, app=None)
    changelog = topology.changelog("join")
    n = settings.stream_partitions
    now = int(time.time() * 1000)
    # What a worker of the format before left behind: an interaction that waits for its
    # feedback, with one-letter keys.
    key = "kept-by-old-worker"
    old_entry = {
        "s": "w",
        "pt": partition_of(key, n),
        "dl": now + 600_000,
        "i": {"task": TASK, "text": "text the old worker kept", "ts": TS, "at": now},
        "oi": 0,
    }

    async def prepare() -> None:
        await create_topics(settings, [TopicSpec(changelog, n, {"cleanup.policy": "compact"})])
        await create_topics(settings, internal_topic_specs(settings))
        await send_raw(
            settings,
            [(changelog, orjson.dumps(key), orjson.dumps(old_entry))],
        )

    asyncio.run(prepare())
    worker = WorkerProcess(worker_env(settings), tmp_path / "worker.log").start()
    garbage = [
        (topology.task_events, TASK.encode(), b"not json"),
        (topology.task_events, TASK.encode(), b'{"kind": "gossip", "task": "tfns-sentiment"}'),
        (
            topology.task_events,
            TASK.encode(),
            b'{"kind": "obs", "task": "tfns-sentiment", "inputs": [], "predictions": [],'
            b' "labelled": [[0, "seven", 1, null, null, 0]]}',
        ),
        (topology.join_ticks, None, b'{"ts": "soon"}'),
    ]

    async def go():
        await wait_ready(settings, worker)
        await send_raw(settings, garbage)
        await publish(settings, [prediction(key, 2)])

        async def joined_with_prediction() -> dict | None:
            entry = (await read_table(settings, changelog)).get(key, {})
            return entry if "prediction" in entry else None

        waiting = await wait_for(joined_with_prediction, 30, "the prediction to join", worker)
        await publish(settings, [feedback(key, 1)])

        async def invalid_events() -> list[DeadLetter]:
            letters = await decoded(settings, "dead-letter", DeadLetter)
            found = [d for d in letters if d.error == "invalid_event"]
            return found if len(found) == len(garbage) else []

        letters = await wait_for(invalid_events, 30, "the garbage to be dead-lettered", worker)

        async def labelled() -> list[LabelledExample]:
            examples = await decoded(settings, "labelled", LabelledExample)
            return [e for e in examples if e.interaction_id == key]

        examples = await wait_for(labelled, 30, "the old entry to be joined", worker)

        async def counted():
            state = await task_state(settings, TASK)
            return state if state is not None and state.examples >= 1 else None

        state = await wait_for(counted, 30, "the task agent to count it", worker)
        done = (await read_table(settings, changelog))[key]
        return waiting, done, letters, examples, state

    try:
        waiting, done, letters, examples, state = asyncio.run(go())
    finally:
        worker.stop()
        asyncio.run(delete_prefixed_topics(settings))

    # The old entry was read, and written back with named fields once it changed.
    assert waiting["state"] == "waiting" and "s" not in waiting
    assert waiting["interaction"]["text"] == "text the old worker kept"
    assert waiting["prediction"]["token_count"] == 7
    assert done["state"] == "done" and done["label"] == 1
    [example] = examples
    assert (example.text, example.label, example.predicted_label) == (
        "text the old worker kept",
        1,
        2,
    )
    assert example.adapter_version == "v5"
    # Garbage on both internal topics went to dead-letter with its reason, and both agents
    # carried on: the task agent counted the example that came after it.
    assert {d.source_topic for d in letters} == {topology.task_events, topology.join_ticks}
    text = " | ".join(sorted(d.reason for d in letters))
    assert "not JSON" in text and "unknown kind 'gossip'" in text
    assert "labelled[0].offset" in text and "join tick: ts_ms" in text
    assert state.examples == 1 and state.adapter_version == "v5"
