"""Liveness from lag samples: which partitions count as this process's stalls.

The sampler reads the whole group's offsets; a replica must report (and act on) only the
partitions it is assigned. The samples here are scripted offsets, so the verdict is checked
step by step; the integration tests drive the same code against the real broker.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from streamtune.core.observability import Liveness, Metrics, watch_lag

P0, P1 = TopicPartition("feedback", 0), TopicPartition("feedback", 1)


class ScriptedLag:
    """Offsets that move on partition 0 and stand still with lag on partition 1; records
    are processed just before each sample (the process as a whole is busy, not idle)."""

    group_id = "g"

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness
        self.calls = 0

    async def offsets(self) -> dict[TopicPartition, tuple[int, int]]:
        self.calls += 1
        self.liveness.record()
        return {P0: (10 * self.calls, 10 * self.calls + 5), P1: (3, 9)}


def sample(owned: set[tuple[str, int]] | None, samples: int = 8) -> tuple[Liveness, list]:
    # 8 samples at least 0.05 s apart: partition 1 stands still for 0.35 s or more, past the
    # 0.2 s limit however slow the machine.
    liveness = Liveness(stall_after_s=0.2, metrics=None)
    acted: list[dict] = []

    async def on_stalls(stalled, offsets) -> None:  # type: ignore[no-untyped-def]
        acted.append(dict(stalled))

    async def go() -> None:
        lag, stop = ScriptedLag(liveness), asyncio.Event()

        async def stop_after() -> None:
            while lag.calls < samples:
                await asyncio.sleep(0.01)
            stop.set()

        await asyncio.gather(
            watch_lag(
                lag,  # type: ignore[arg-type]
                liveness,
                Metrics(),
                stop,
                0.05,
                on_stalls,
                (lambda: owned) if owned is not None else None,
            ),
            stop_after(),
        )

    asyncio.run(go())
    return liveness, acted


def test_a_stalled_partition_this_process_owns_fails_liveness_and_is_handed_on():
    liveness, acted = sample({("feedback", 0), ("feedback", 1)})
    assert not liveness.health.healthy
    assert "feedback-1 has lag" in liveness.health.reason
    assert acted and all(set(stalled) == {P1} for stalled in acted)


def test_a_stalled_partition_another_replica_owns_is_not_this_process_s_stall():
    liveness, acted = sample({("feedback", 0)})
    assert liveness.health.healthy, liveness.health.reason
    assert acted == []
    liveness, acted = sample(None)  # no assignment known: only the total lag counts
    assert liveness.health.healthy and acted == []
