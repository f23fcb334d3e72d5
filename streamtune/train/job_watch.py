"""Watch ``train-jobs`` for drift jobs, so the trainer can drop work a drift made stale.

The trainer takes jobs one at a time through its consumer group; this group-less reader
sees every job as soon as the worker publishes it, including the ones still queued behind
the job in progress.

>>> from schemas.messages import OffsetRange, TrainJob
>>> def job(n, reason, ts):
...     return TrainJob(job_id=f"tfns-sentiment:{n}", tasks=["tfns-sentiment"], reason=reason,
...                     labelled_topic="labelled", train_ranges=[OffsetRange(partition=0, start=0, end=1)],
...                     holdout_ranges=[OffsetRange(partition=0, start=1, end=2)], created_ts_ms=ts)
>>> seen = DriftJobs()
>>> old, drift = job(1, "window", 1_700_000_000_000), job(2, "drift", 1_700_000_000_500)
>>> seen.note(old); seen.note(drift)
>>> seen.superseding(old), seen.superseding(drift)
('tfns-sentiment:2', None)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from schemas.base import DecodeError
from schemas.messages import TrainJob
from schemas.topics import TRAIN_JOBS
from streamtune.core.clients import make_consumer
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import topic_partitions

log = logging.getLogger(__name__)


class DriftJobs:
    """The newest drift job per task."""

    def __init__(self) -> None:
        self.newest: dict[str, TrainJob] = {}

    def note(self, job: TrainJob) -> None:
        if job.reason != "drift":
            return
        for task in job.tasks:
            known = self.newest.get(task)
            if known is None or job.created_ts_ms > known.created_ts_ms:
                self.newest[task] = job

    def superseding(self, job: TrainJob) -> str | None:
        """The id of a drift job newer than ``job`` for one of its tasks, if there is one."""
        for task in job.tasks:
            drift = self.newest.get(task)
            if (
                drift is not None
                and drift.job_id != job.job_id
                and drift.created_ts_ms > job.created_ts_ms
            ):
                return drift.job_id
        return None


class JobWatch:
    """Tails ``train-jobs`` from the beginning in a background task."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.drifts = DriftJobs()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = make_consumer(self.settings, group_id=None)
        await self.consumer.start()
        partitions = await topic_partitions(self.consumer, self.settings.topic(TRAIN_JOBS))
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        self.drifts.note(TrainJob.from_bytes(record.value))
                    except DecodeError:
                        continue  # the trainer's own consumer dead-letters it

    def superseding(self, job: TrainJob) -> str | None:
        return self.drifts.superseding(job)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()
