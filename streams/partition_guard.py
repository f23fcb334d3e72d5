"""Re-arming an input partition the worker's consumer stopped fetching.

After a broker restart, Faust can leave one assigned partition out of the set it fetches
(a resume that never comes; faust-streaming issues #523 and #629). The worker then goes on
consuming every other partition while that one's lag grows, and nothing fails: in a test
that killed the only broker, the feedback of one partition was never read again.

The guard acts on what the lag sampler sees (:func:`streamtune.core.observability.watch_lag`):
a partition whose committed offset has stood still with lag for ``stall_s`` while the agents
went on processing records. It puts the partition back among those Faust fetches and seeks
it to its committed offset; records already processed come again, which the join ignores
as duplicates. A worker whose agents are stuck altogether is left to ``/healthz``. The
sampler hands it only this worker's own partitions (``owned`` in ``watch_lag``).

>>> guard = PartitionGuard(consumer=None, liveness=None, stall_s=15.0)
>>> guard.due({TopicPartition("feedback", 1): 16.0, TopicPartition("feedback", 2): 3.0}, now=50.0)
[TopicPartition(topic='feedback', partition=1)]
>>> guard.tried[TopicPartition("feedback", 1)] = 50.0   # re-armed: wait a while for it to move
>>> guard.due({TopicPartition("feedback", 1): 20.0}, now=55.0)
[]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from streamtune.core.observability import Liveness, Metrics

log = logging.getLogger(__name__)


class PartitionGuard:
    """Re-arms stalled input partitions of a Faust ``consumer`` (see the module docstring)."""

    def __init__(
        self,
        consumer: Any,
        liveness: Liveness | None,
        stall_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.consumer = consumer
        self.liveness = liveness
        self.stall_s = stall_s
        self.metrics = metrics
        #: When each partition was last re-armed (monotonic seconds).
        self.tried: dict[TopicPartition, float] = {}

    def due(
        self, stalled: Mapping[TopicPartition, float], now: float | None = None
    ) -> list[TopicPartition]:
        """The stalled partitions to re-arm now: stalled ``stall_s`` or more, and not
        re-armed within the last ``stall_s``."""
        now = time.monotonic() if now is None else now
        return sorted(
            (
                tp
                for tp, seconds in stalled.items()
                if seconds >= self.stall_s and now - self.tried.get(tp, -1e18) >= self.stall_s
            ),
            key=lambda tp: (tp.topic, tp.partition),
        )

    async def __call__(
        self,
        stalled: Mapping[TopicPartition, float],
        offsets: Mapping[TopicPartition, tuple[int, int]],
    ) -> None:
        if self.stall_s <= 0:
            return
        if self.liveness is not None and self.liveness.seconds_since_last() >= self.stall_s:
            return  # nothing processed anywhere: not one partition's fetch, /healthz tells
        now = time.monotonic()
        for tp in self.due(stalled, now):
            ftp = TP(tp.topic, tp.partition)
            done, end = offsets[tp]
            log.warning(
                "partition %s-%d: lag %d and no committed progress for %.0fs while other "
                "partitions flow (fetched: %s, paused: %s, buffered: %s); re-arming its fetch "
                "from offset %d",
                tp.topic,
                tp.partition,
                end - done,
                stalled[tp],
                ftp in self.consumer._get_active_partitions(),
                ftp in self.consumer._paused_partitions,
                ftp in self.consumer._buffered_partitions,
                done,
            )
            self.tried[tp] = now
            self.consumer._buffered_partitions.discard(ftp)
            self.consumer.resume_partitions([ftp])
            # Drops what the client buffered for it and fetches again from the committed
            # offset; Faust's read offset follows, so the records are not skipped.
            await self.consumer.seek_wait({ftp: done})
            if self.metrics is not None:
                self.metrics.rearms.labels(topic=tp.topic).inc()
