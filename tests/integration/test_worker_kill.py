"""kill -9 of the worker in the middle of a window, then a restart: every labelled example
is on `labelled` exactly once, and every one is counted in exactly one window."""

from __future__ import annotations

import asyncio
import collections

import pytest

from schemas import Feedback, Interaction, LabelledExample
from tests.examples import TS
from tests.kafka_helpers import read_all
from tests.worker_helpers import (
    WorkerProcess,
    delete_prefixed_topics,
    publish,
    task_state,
    wait_for,
    wait_ready,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TASK = "tfns-sentiment"
N = 600
WINDOW = 100
KILL_AFTER = 150
#: Feedback held back until the kill: the first worker cannot have counted more than this when
#: it dies, however fast it is, and it dies mid-window (HELD is not a multiple of WINDOW).
HELD = 360


# The worker's readiness (60 s), two counts (90 s each), the stops (30 s each) and reads.
@pytest.mark.timeout(600)
def test_kill_9_mid_window_loses_nothing_and_counts_nothing_twice(topics, tmp_path):
    settings = topics
    env = worker_env(
        settings,
        window_size=WINDOW,
        train_min_examples=50,
        train_cooldown_s=0,
        join_prediction_wait_s=0,
        worker_instance_id="kill-test",  # static membership: the restart takes over at once
    )
    first = WorkerProcess(env, tmp_path / "first.log").start()
    second = WorkerProcess(env, tmp_path / "second.log")

    async def counted(worker: WorkerProcess, n: int):
        async def check():
            state = await task_state(settings, TASK)
            return state if state is not None and state.examples >= n else None

        return await wait_for(check, 90, f"{n} examples counted", worker, interval_s=0.1)

    killed = asyncio.Event()

    async def feed() -> None:
        # Feedback keeps coming while the worker is killed and restarted; from HELD on, only
        # once the kill has landed.
        for start in range(0, N, 20):
            if start == HELD:
                await killed.wait()
            await publish(
                settings,
                [
                    (
                        "feedback",
                        f"k-{n}",
                        Feedback(interaction_id=f"k-{n}", task=TASK, label=n % 3, ts_ms=TS),
                    )
                    for n in range(start, start + 20)
                ],
            )
            await asyncio.sleep(0.05)

    async def go():
        await wait_ready(settings, first)
        await publish(
            settings,
            [
                (
                    "interactions",
                    f"k-{n}",
                    Interaction(interaction_id=f"k-{n}", task=TASK, text=f"tweet {n}", ts_ms=TS),
                )
                for n in range(N)
            ],
        )
        feeding = asyncio.ensure_future(feed())
        at_kill = await counted(first, KILL_AFTER)
        first.kill()
        killed.set()
        second.start()
        final = await counted(second, N)
        await feeding
        labelled = await read_all(settings, settings.topic("labelled"), expect=N)
        return at_kill, final, labelled

    try:
        at_kill, final, labelled = asyncio.run(go())
    finally:
        first.stop()
        second.stop()
        asyncio.run(delete_prefixed_topics(settings))

    assert KILL_AFTER <= at_kill.examples <= HELD < N, at_kill.examples
    # No example lost, none published twice.
    ids = collections.Counter(LabelledExample.from_bytes(r.value).interaction_id for r in labelled)
    assert len(labelled) == N and set(ids) == {f"k-{n}" for n in range(N)}
    assert max(ids.values()) == 1
    # Every labelled offset lies in exactly one window, and each window's count is right.
    on_topic = {(r.partition, r.offset) for r in labelled}
    windows = [*final.history, *final.closed, *([final.open] if final.open else [])]
    seen: list[tuple[int, int]] = []
    for window in windows:
        inside = [(p, o) for p, (start, end) in window.ranges.items() for o in range(start, end)]
        assert len(inside) == window.count, window
        seen += inside
    assert final.examples == N
    assert sorted(seen) == sorted(on_topic)
    assert sum(w.count for w in windows) == N
