"""What a worker's tables hold, read from their changelog topics (no worker needed).

``streamtune worker status`` prints it: the join counters per partition (expired and late
feedback included) and, per task, the windows, positions, jobs and drift counters.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.join import COUNTERS
from streams.topology import Topology
from streams.windows import TaskState
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_topic


async def read_table(settings: Settings, topic: str) -> dict[str, Any]:
    """The latest value of every key of a changelog topic (deleted keys left out)."""
    table: dict[str, Any] = {}
    for record in await read_topic(settings, topic, timeout_s=60):
        key = orjson.loads(record.key)
        if record.value is None:
            table.pop(key, None)
        else:
            table[key] = orjson.loads(record.value)
    return table


async def worker_status(settings: Settings) -> dict[str, Any]:
    """Join counters (summed over partitions, and per partition) and task states."""
    topology = Topology(settings, app=None)
    join = await read_table(settings, topology.changelog("join"))
    tasks = await read_table(settings, topology.changelog("tasks"))
    partitions = {
        int(key.split(":", 1)[1]): value for key, value in join.items() if key.startswith("~")
    }
    totals = {name: sum(p["counts"].get(name, 0) for p in partitions.values()) for name in COUNTERS}
    return {
        "join": totals,
        "join_partitions": partitions,
        "join_entries": len(join) - len(partitions),
        "tasks": {task: TaskState.from_dict(value) for task, value in tasks.items()},
    }


def describe(status: dict[str, Any]) -> str:
    """A few readable lines."""
    lines = ["join: " + ", ".join(f"{k}={v}" for k, v in status["join"].items() if v)]
    lines.append(f"join entries held: {status['join_entries']}")
    for task, state in sorted(status["tasks"].items()):
        open_count = state.open.count if state.open else 0
        lines.append(
            f"{task}: {state.examples} examples, open window {open_count}, "
            f"{len(state.closed)} closed untrained, {state.jobs_emitted} jobs "
            f"(in flight: {state.in_flight['job_id'] if state.in_flight else 'none'}), "
            f"{state.drift_events} drift events, adapter {state.adapter_version or 'unknown'}"
        )
    return "\n".join(lines)
