"""Rollback only on purpose: the signed, per-task ``sequence`` of adapter manifests.

Every manifest a trainer (or ``streamtune rollback``) signs carries a sequence higher than
any before it for its task. Consumers remember the highest sequence of a *signature-valid*
manifest they have seen per task (the floor) and reject a live manifest below it, so
re-sending an old signed manifest on ``model-updates`` no longer rolls the fleet back. A
rollback is a new signed manifest, with a new, higher sequence, that points at the old blob.

Manifests signed before the field existed carry no sequence and read as 0: they are
accepted until a manifest with a sequence has been seen for the task.

>>> floor = SequenceFloor()
>>> floor.check("t", 5, "v2") is None   # nothing seen yet: anything goes
True
>>> floor.advance("t", 5, "v2")
>>> floor.check("t", 3, "v1")           # a replayed older manifest
'sequence 3 of t/v1 is older than live sequence 5 (t/v2); a rollback must be signed anew'
>>> floor.check("t", 5, "v2") is None   # the same manifest again is harmless
True
>>> floor.check("t", 9, "v1") is None   # an explicit rollback: old version, new sequence
True
>>> legacy = SequenceFloor()
>>> legacy.advance("t", 0, "v1"); legacy.check("t", 0, "v2") is None  # both without sequence
True
>>> next_sequence(previous=7, now_us=5), next_sequence(previous=7, now_us=1_700_000_000_000_000)
(8, 1700000000000000)

A consumer seeds its floor from the signed history records (``TASK@VERSION``) as well as the
live ones, so the floor survives a restart even after compaction dropped the live record
that set it. ``streamtune rollback`` counts only sequences it could verify, and none more
than ``MAX_AHEAD_US`` ahead of its clock (:func:`plausible`), so one manifest with a
sequence near 2**62 cannot make every later publish stale.

>>> now = 1_700_000_000_000_000
>>> plausible(now + MAX_AHEAD_US, now), plausible(2**62, now)
(True, False)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def clock_us() -> int:
    """Wall-clock microseconds: the default source of new sequences."""
    return time.time_ns() // 1000


#: How far ahead of the wall clock (µs) a sequence may be and still count: one day, far
#: beyond any sane clock skew between a trainer and the operator who rolls back.
MAX_AHEAD_US = 24 * 3600 * 1_000_000


def plausible(sequence: int, now_us: int) -> bool:
    """Whether ``sequence`` is at most :data:`MAX_AHEAD_US` ahead of ``now_us``."""
    return sequence <= now_us + MAX_AHEAD_US


def next_sequence(previous: int, now_us: int) -> int:
    """The sequence for a new manifest: wall-clock microseconds, and always above ``previous``.

    Clock time keeps sequences increasing across trainers that never saw each other's
    manifests; ``previous + 1`` keeps them increasing when a clock lags.
    """
    return max(previous + 1, now_us)


@dataclass
class SequenceFloor:
    """The highest (sequence, version) of a signature-valid live manifest, per task."""

    seen: dict[str, tuple[int, str]] = field(default_factory=dict)

    def sequence(self, task: str) -> int:
        """The floor of ``task``: 0 when nothing with a sequence has been seen."""
        return self.seen.get(task, (0, ""))[0]

    def check(self, task: str, sequence: int, version: str) -> str | None:
        """Why a live manifest is stale, or None when it may be served."""
        if task not in self.seen:
            return None
        floor, floor_version = self.seen[task]
        if sequence > floor or (sequence == floor and (version == floor_version or floor == 0)):
            return None  # (legacy manifests, all 0, carry no order: the newest record wins)
        return (
            f"sequence {sequence} of {task}/{version} is older than live sequence {floor} "
            f"({task}/{floor_version}); a rollback must be signed anew"
        )

    def advance(self, task: str, sequence: int, version: str) -> None:
        """Record a signature-valid manifest that passed :meth:`check`."""
        if self.check(task, sequence, version) is None:
            self.seen[task] = (sequence, version)
