"""Labelled windows: ranges of ``labelled`` offsets per task and partition.

A window never copies examples. It records, for each partition of ``labelled``, the
half-open offset range ``[start, end)`` from its first to its last example of the task, and
how many of the task's examples lie in it (other tasks' examples can sit in between: the
trainer filters by task). Windows tumble by count (``window_size`` examples) and/or by age
(``window_max_age_ms`` after their first example).

Each example is counted at most once: the state keeps, per partition, the next offset it
has not counted yet, in the same record as the windows. A replayed observation (after a
crash of the join or of this agent) carries an offset below it and is skipped; the join
reports every partition's offsets in increasing order, so nothing newer is ever skipped.

>>> cfg = WindowConfig(window_size=3)
>>> state = TaskState("tfns-sentiment")
>>> [add_example(state, cfg, partition=p, offset=o, now_ms=0) for p, o in
...  [(0, 10), (1, 4), (0, 10), (0, 12)]]
[True, True, False, True]
>>> [(w.ranges, w.count) for w in state.closed]
[({0: [10, 13], 1: [4, 5]}, 3)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamtune.core.layers import WindowSettings

#: Untrained closed windows beyond this many are merged, oldest first, to bound the state.
MAX_CLOSED = 32


@dataclass(frozen=True)
class WindowConfig:
    """When a window closes, and how many newest examples it remembers for the holdout."""

    window_size: int = 1000
    window_max_age_ms: int = 0
    holdout_fraction: float = 0.2

    @classmethod
    def from_settings(cls, windows: WindowSettings) -> WindowConfig:
        """Windows as configured (``STREAMTUNE_WINDOW_*``; ``settings.windows``).

        >>> from streamtune.core.layers import WindowSettings
        >>> WindowConfig.from_settings(WindowSettings(size=0, max_age_s=60)).window_max_age_ms
        60000
        """
        return cls(
            window_size=windows.size,
            window_max_age_ms=int(windows.max_age_s * 1000),
            holdout_fraction=windows.holdout_fraction,
        )

    @property
    def tail_size(self) -> int:
        """How many newest examples a closed window remembers (enough for its holdout)."""
        if self.window_size:
            return min(1000, math.ceil(self.holdout_fraction * self.window_size) + 1)
        return 1000

    @property
    def open_tail_size(self) -> int:
        """How many newest examples the open window remembers: all of them (up to 1000),
        so that a drift can cut it where the change began (:func:`split_open`)."""
        return min(1000, self.window_size) if self.window_size else 1000


@dataclass
class Window:
    """Offset ranges of one window: ``ranges[partition] = [start, end)``."""

    id: int
    opened_ms: int
    ranges: dict[int, list[int]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    tail: list[list[int]] = field(default_factory=list)  # [partition, offset], newest last

    def add(self, partition: int, offset: int, tail_size: int) -> None:
        bounds = self.ranges.get(partition)
        if bounds is None:
            self.ranges[partition] = [offset, offset + 1]
        else:
            bounds[1] = offset + 1
        self.counts[partition] = self.counts.get(partition, 0) + 1
        self.count += 1
        self.tail.append([partition, offset])
        if len(self.tail) > tail_size:
            del self.tail[0]

    def merge(self, newer: Window) -> Window:
        """One window covering this one and the ``newer`` one after it."""
        merged = Window(self.id, self.opened_ms, count=self.count + newer.count, tail=newer.tail)
        for partition in sorted({*self.ranges, *newer.ranges}):
            mine, theirs = self.ranges.get(partition), newer.ranges.get(partition)
            start = (mine or theirs)[0]  # type: ignore[index]
            end = (theirs or mine)[1]  # type: ignore[index]
            merged.ranges[partition] = [start, end]
            merged.counts[partition] = self.counts.get(partition, 0) + newer.counts.get(
                partition, 0
            )
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "opened_ms": self.opened_ms,
            "ranges": {str(p): r for p, r in self.ranges.items()},
            "counts": {str(p): n for p, n in self.counts.items()},
            "count": self.count,
            "tail": self.tail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return cls(
            id=data["id"],
            opened_ms=data["opened_ms"],
            ranges={int(p): list(r) for p, r in data["ranges"].items()},
            counts={int(p): n for p, n in data["counts"].items()},
            count=data["count"],
            tail=[list(item) for item in data.get("tail", [])],
        )


@dataclass
class TaskState:
    """Everything the task agent keeps about one task, stored as one table value.

    Positions (``obs_next``, ``labelled_next``) live in the same record as the windows and
    counters, so that a restarted worker never applies an observation twice.
    """

    task: str
    obs_next: int = 0  # next offset of the task-events partition to process
    replay_from: int = 0  # where detector replay starts on restart
    labelled_next: dict[int, int] = field(default_factory=dict)
    examples: int = 0
    observations: int = 0
    next_window_id: int = 0
    open: Window | None = None
    closed: list[Window] = field(default_factory=list)  # closed, not trained yet
    history: list[Window] = field(default_factory=list)  # trained, kept for rehearsal
    jobs_emitted: int = 0
    in_flight: dict[str, Any] | None = None  # {"job_id": ..., "created_ms": ...}
    last_job_ms: int = 0
    pending: str | None = None  # a coalesced trigger waiting for the policy
    pending_drift_event: str | None = None
    adapter_version: str | None = None
    drift_events: int = 0
    last_drift: dict[str, Any] | None = None
    regime_start: int = 0  # id of the first window of the current regime (see streams.trigger)
    drift_mark: int = 0  # ``examples`` where the current regime began (its located change)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "obs_next": self.obs_next,
            "replay_from": self.replay_from,
            "labelled_next": {str(p): o for p, o in self.labelled_next.items()},
            "examples": self.examples,
            "observations": self.observations,
            "next_window_id": self.next_window_id,
            "open": self.open.to_dict() if self.open else None,
            "closed": [w.to_dict() for w in self.closed],
            "history": [w.to_dict() for w in self.history],
            "jobs_emitted": self.jobs_emitted,
            "in_flight": self.in_flight,
            "last_job_ms": self.last_job_ms,
            "pending": self.pending,
            "pending_drift_event": self.pending_drift_event,
            "adapter_version": self.adapter_version,
            "drift_events": self.drift_events,
            "last_drift": self.last_drift,
            "regime_start": self.regime_start,
            "drift_mark": self.drift_mark,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskState:
        state = cls(task=data["task"])
        for name in (
            "obs_next",
            "replay_from",
            "examples",
            "observations",
            "next_window_id",
            "jobs_emitted",
            "in_flight",
            "last_job_ms",
            "pending",
            "pending_drift_event",
            "adapter_version",
            "drift_events",
            "last_drift",
            "regime_start",
            "drift_mark",
        ):
            if name in data:
                setattr(state, name, data[name])
        state.labelled_next = {int(p): o for p, o in data.get("labelled_next", {}).items()}
        state.open = Window.from_dict(data["open"]) if data.get("open") else None
        state.closed = [Window.from_dict(w) for w in data.get("closed", [])]
        state.history = [Window.from_dict(w) for w in data.get("history", [])]
        return state


def add_example(
    state: TaskState, cfg: WindowConfig, *, partition: int, offset: int, now_ms: int
) -> bool:
    """Count one labelled example into the open window; False if it was counted before."""
    if offset < state.labelled_next.get(partition, 0):
        return False
    state.labelled_next[partition] = offset + 1
    if state.open is None:
        state.open = Window(state.next_window_id, now_ms)
        state.next_window_id += 1
    state.open.add(partition, offset, cfg.open_tail_size)
    state.examples += 1
    if cfg.window_size and state.open.count >= cfg.window_size:
        close_open(state, cfg.tail_size)
    return True


def close_if_old(state: TaskState, cfg: WindowConfig, now_ms: int) -> bool:
    """Close the open window when it is older than ``window_max_age_ms``."""
    window = state.open
    if window is None or not cfg.window_max_age_ms or window.count == 0:
        return False
    if now_ms - window.opened_ms < cfg.window_max_age_ms:
        return False
    close_open(state, cfg.tail_size)
    return True


def split_open(state: TaskState, since: int, tail_size: int | None = None) -> bool:
    """Cut the open window where a change began: its newest ``since`` examples become a
    window of their own (the open one), the rest a closed window before it, which keeps
    ``tail_size`` offsets (see :func:`close_open`). False, and nothing changes, when the
    cut is not inside the open window or not among the offsets it remembers.

    >>> state = TaskState("tfns-sentiment")
    >>> cfg = WindowConfig(window_size=100)
    >>> for i in range(10):
    ...     _ = add_example(state, cfg, partition=i % 2, offset=i // 2, now_ms=0)
    >>> split_open(state, 3)
    True
    >>> state.closed[0].ranges, state.closed[0].count, state.open.ranges, state.open.count
    ({0: [0, 4], 1: [0, 3]}, 7, {1: [3, 5], 0: [4, 5]}, 3)
    """
    window = state.open
    if window is None or not 0 < since < window.count or since > len(window.tail):
        return False
    after = window.tail[-since:]
    first: dict[int, int] = {}
    count: dict[int, int] = {}
    for partition, offset in after:
        first.setdefault(partition, offset)
        count[partition] = count.get(partition, 0) + 1
    kept = window.tail[:-since][-tail_size:] if tail_size else window.tail[:-since]
    before = Window(window.id, window.opened_ms, count=window.count - since, tail=kept)
    newer = Window(state.next_window_id, window.opened_ms, count=since, tail=after)
    state.next_window_id += 1
    for partition, (start, end) in window.ranges.items():
        total = window.counts[partition]
        if partition not in first:
            before.ranges[partition], before.counts[partition] = [start, end], total
            continue
        if total > count[partition]:
            # A partition's offsets grow with time: its examples before the cut precede it.
            before.ranges[partition] = [start, first[partition]]
            before.counts[partition] = total - count[partition]
    for partition in first:  # in the order the newer examples came
        newer.ranges[partition] = [first[partition], window.ranges[partition][1]]
        newer.counts[partition] = count[partition]
    state.closed.append(before)
    state.open = newer
    return True


def close_open(state: TaskState, tail_size: int | None = None) -> None:
    """Move the open window to the closed (untrained) ones, keeping the newest
    ``tail_size`` offsets it remembers (all when None)."""
    if state.open is None:
        return
    if tail_size is not None:
        del state.open.tail[: max(0, len(state.open.tail) - tail_size)]
    state.closed.append(state.open)
    state.open = None
    while len(state.closed) > MAX_CLOSED:
        # Merge the oldest neighbours on the same side of the regime's start, so a regime
        # never absorbs the windows before it (or the other way round).
        start = state.regime_start
        i = next(
            i
            for i in range(len(state.closed) - 1)
            if (state.closed[i].id >= start) == (state.closed[i + 1].id >= start)
        )
        state.closed[i : i + 2] = [state.closed[i].merge(state.closed[i + 1])]
