"""The task agent: drift statistics, windows and the trigger policy, per task.

It reads ``<app id>-task-events`` (keyed by task, so one task's events stay in order on one
partition) and keeps one :class:`~streams.windows.TaskState` per task in the ``tasks``
table. Per batch:

1. skip records below the task's ``obs_next`` (already applied before a restart);
2. count new labelled offsets into the open window (each offset once), feed the drift
   statistics, record triggers (drift, full or aged window, schedule) and apply the policy;
3. publish the drift events and train jobs and wait for the broker's acknowledgement;
4. write the task states to the changelog.

Outputs go out before the state that remembers them, so a crash can repeat a drift event or
a train job (with the same id), never lose one. The River detectors live in memory; after a
restart they are rebuilt by replaying the task's last ``drift_replay_events`` observations
from this same topic, with alarms muted (no pickle, no detector state in the table).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.codec import dead_letter
from schemas.messages import DeadLetter, DriftEvent, TrainJob
from schemas.tasks import get_task, known_tasks
from streams.changelog import ChangelogWriter
from streams.drift import Detection, DriftConfig, DriftMonitor
from streams.errors import EventError
from streams.events import (
    AdapterPublished,
    JobEnded,
    Observations,
    TaskEvent,
    TaskTick,
    parse_task_event,
)
from streams.topology import Topology
from streams.trigger import TriggerConfig, adapter_published, evaluate, job_ended, trigger
from streams.windows import TaskState, WindowConfig, add_example, close_if_old
from streamtune.core.topic_reader import read_partition

log = logging.getLogger(__name__)


@dataclass
class _Outputs:
    """What one group of batches publishes."""

    drift_events: list[DriftEvent] = field(default_factory=list)
    jobs: list[TrainJob] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


class TaskAgent:
    """Runs drift statistics, windows and triggers for the tasks this worker owns."""

    def __init__(self, topology: Topology) -> None:
        self.t = topology
        s = topology.settings
        self.drift_config = DriftConfig.from_settings(s.drift)
        self.replay_events = s.drift.replay_events
        self.window_config = WindowConfig.from_settings(s.windows)
        self.trigger_config = TriggerConfig.from_settings(
            s.trigger, tail_size=self.window_config.tail_size
        )
        self.changelog = ChangelogWriter(topology.app, topology.task_table)
        self.monitors: dict[str, DriftMonitor] = {}
        self._replay_marks: dict[str, deque[tuple[int, int]]] = {}

    def forget(self, partitions: set[int]) -> None:
        """Partitions moved away: drop their tasks (state and detectors come back by recovery
        and replay if the partitions do)."""
        n = self.t.settings.stream_partitions
        store = self.t.task_table.data
        for task in {*self.monitors, *list(store.keys())}:
            if _partition_of(task, n) in partitions:
                self.monitors.pop(task, None)
                self._replay_marks.pop(task, None)
                store.pop(task, None)

    async def process(self, batches: list[tuple[int, list[Any]]]) -> None:
        """Handle batches of ``task-events`` records, each ``(partition, records)``."""
        now = int(time.time() * 1000)
        states: dict[str, tuple[int, TaskState]] = {}
        out = _Outputs()
        for partition, records in batches:
            for record in records:
                await self._apply(partition, record, now, states, out)
        await self._publish(out)
        for task, (partition, state) in states.items():
            await self.changelog.write(partition, {task: state.to_dict()})

    async def _apply(
        self,
        partition: int,
        record: Any,
        now: int,
        states: dict[str, tuple[int, TaskState]],
        out: _Outputs,
    ) -> None:
        try:
            event = parse_task_event(record.value)
        except EventError as exc:  # a corrupt internal record must not stop the agent
            out.dead.append(
                dead_letter(
                    record.value,
                    error="invalid_event",
                    reason=str(exc),
                    topic=record.topic,
                    partition=partition,
                    offset=record.offset,
                    key=record.key,
                )
            )
            return
        task = event.task
        is_obs = isinstance(event, Observations)
        state = states[task][1] if task in states else self._state(task, is_obs)
        if state is None or record.offset < state.obs_next:
            return
        states[task] = (partition, state)
        await self._apply_event(state, event, partition, record.offset, now, out)
        state.obs_next = record.offset + 1
        close_if_old(state, self.window_config, now)
        job = evaluate(state, self.trigger_config, now_ms=now, labelled_topic=self.t.labelled)
        if job is not None:
            log.info("train job %s (%s) for %s", job.job_id, job.reason, task)
            out.jobs.append(job)

    async def _apply_event(
        self,
        state: TaskState,
        event: TaskEvent,
        partition: int,
        offset: int,
        now: int,
        out: _Outputs,
    ) -> None:
        if isinstance(event, Observations):
            monitor = await self._monitor(state, partition)
            out.drift_events += self._observe(state, monitor, event, offset, now)
        elif isinstance(event, AdapterPublished):
            adapter_published(state, event.version)
        elif isinstance(event, JobEnded):
            job_ended(state, event.job_id)
        elif not isinstance(event, TaskTick):  # a new kind must be handled here
            raise TypeError(f"unhandled task event {event!r}")

    def _observe(
        self, state: TaskState, monitor: DriftMonitor, obs: Observations, offset: int, now: int
    ) -> list[DriftEvent]:
        fresh = tuple(
            item
            for item in obs.labelled
            if add_example(
                state, self.window_config, partition=item.partition, offset=item.offset, now_ms=now
            )
        )
        if obs.predictions:
            state.adapter_version = obs.predictions[-1].adapter_version
        detections = monitor.observe(replace(obs, labelled=fresh))
        self._mark_replay(state, offset, monitor)
        state.observations = monitor.position
        events = []
        for detection in detections:
            event = _drift_event(state, detection, now)
            log.warning(
                "drift on %s: %s by %s, value %.4f at position %d%s",
                state.task,
                event.statistic,
                event.detector,
                event.value,
                event.position,
                "" if detection.since is None else f", began {detection.since} examples ago",
            )
            events.append(event)
            state.drift_events += 1
            state.last_drift = {"event_id": event.event_id, "statistic": event.statistic, "ts": now}
            # A rising error rate is the model failing now: it always starts a new regime.
            # The other statistics (inputs, confidence, label mix) often see the same shift
            # later; within the settle span of a regime they start nothing.
            settle = (
                0 if event.statistic == "error_rate" else self.trigger_config.drift_settle_examples
            )
            trigger(
                state, "drift", event.event_id, settle_examples=settle, since=detection.since,
                tail_size=self.window_config.tail_size,
            )  # fmt: skip
        return events

    async def _publish(self, out: _Outputs) -> None:
        producer = self.t.app.producer
        records = [(self.t.drift_events, e.task, e) for e in out.drift_events]
        records += [(self.t.train_jobs, j.key, j) for j in out.jobs]
        records += [(self.t.dead_letter, d.source_topic, d) for d in out.dead]
        pending = [
            await producer.send(topic, key.encode(), message.to_bytes(), None, None, None)
            for topic, key, message in records
        ]
        await asyncio.gather(*pending)

    def _state(self, task: str, create: bool) -> TaskState | None:
        value = self.t.task_table.data.get(task)
        if value is not None:
            return TaskState.from_dict(value)
        return TaskState(task) if create else None

    async def _monitor(self, state: TaskState, partition: int) -> DriftMonitor:
        """The task's detectors; after a (re)start, rebuilt from the replayed tail."""
        monitor = self.monitors.get(state.task)
        if monitor is not None:
            return monitor
        monitor = DriftMonitor(state.task, self.drift_config, get_task(state.task).num_labels)
        marks: deque[tuple[int, int]] = deque()
        if state.obs_next > state.replay_from:
            records = await read_partition(
                self.t.settings, self.t.task_events, partition, state.replay_from, state.obs_next
            )
            for record in records:
                if record.key != state.task.encode():
                    continue
                try:
                    event = parse_task_event(record.value)
                except EventError:
                    continue  # dead-lettered when it was first read
                if isinstance(event, Observations):
                    before = monitor.position
                    monitor.replay([event])
                    marks.append((record.offset, monitor.position - before))
            log.info(
                "%s: detectors rebuilt from %d observations (offsets %d..%d)",
                state.task,
                monitor.position,
                state.replay_from,
                state.obs_next,
            )
        # Positions continue where the lost detectors were.
        monitor.position = max(monitor.position, state.observations)
        self.monitors[state.task] = monitor
        self._replay_marks[state.task] = marks
        return monitor

    def _mark_replay(self, state: TaskState, offset: int, monitor: DriftMonitor) -> None:
        """Keep ``replay_from`` where the last ``drift_replay_events`` observations start."""
        marks = self._replay_marks.setdefault(state.task, deque())
        fed = monitor.position - state.observations
        marks.append((offset, fed))
        keep = self.replay_events
        total = sum(n for _, n in marks)
        while marks and (total - marks[0][1] >= keep or keep == 0):
            total -= marks.popleft()[1]
        state.replay_from = marks[0][0] if marks else offset + 1


def _drift_event(state: TaskState, detection: Detection, now: int) -> DriftEvent:
    value = detection.value if math.isfinite(detection.value) else 0.0
    return DriftEvent(
        event_id=f"{state.task}:{detection.statistic}:{detection.position}",
        task=state.task,
        detector=detection.detector,
        statistic=detection.statistic,
        value=value,
        position=detection.position,
        examples_since_change=detection.since,
        adapter_version=state.adapter_version,
        ts_ms=now,
    )


def _partition_of(task: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a task key."""
    from aiokafka.partitioner import murmur2

    return (murmur2(task.encode()) & 0x7FFFFFFF) % partitions


def tick_events() -> list[tuple[bytes, bytes]]:
    """One tick per known task, for the task-events topic: ``(key, value)``."""
    return [(task.encode(), TaskTick(task).to_bytes()) for task in known_tasks()]
