"""Building blocks for trainer tests: labelled examples on Kafka, jobs, status readers."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
from collections.abc import AsyncIterator
from pathlib import Path

from schemas import JobStatus, LabelledExample, OffsetRange, TrainJob
from schemas.fields import now_ms
from schemas.topics import LABELLED, TRAIN_STATUS
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.train.worker import Trainer, publish_job
from tests.conftest import DATA
from tests.kafka_helpers import read_all

CRYPTO_MAP = {"Negative": 0, "Positive": 1}  # Bearish, Bullish


def crypto_rows() -> list[tuple[str, int]]:
    with (DATA / "surge_crypto" / "sentiment.csv").open(newline="", encoding="utf-8") as handle:
        return [(r["Comment Text"], CRYPTO_MAP[r["Sentiment"]]) for r in csv.DictReader(handle)]


def csv_rows(
    path: Path, text: str = "text", label: str = "label", labels: tuple[str, ...] | None = None
) -> list[tuple[str, int]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [(r[text], labels.index(r[label]) if labels else int(r[label])) for r in rows]


async def write_labelled(
    settings: Settings,
    rows: list[tuple[str, int]],
    task: str,
    prefix: str,
    raw: list[bytes] | None = None,
) -> OffsetRange:
    """Write examples (and optional raw garbage) to partition 0 of labelled; their offset range."""
    producer = make_producer(settings)
    await producer.start()
    try:
        first = last = None
        values = [
            LabelledExample(
                interaction_id=f"{prefix}-{i}",
                task=task,
                text=text,
                label=label,
                ts_ms=now_ms(),
                source="feedback",
            ).to_bytes()
            for i, (text, label) in enumerate(rows)
        ] + list(raw or [])
        for value in values:
            meta = await producer.send_and_wait(settings.topic(LABELLED), value, partition=0)
            first = meta.offset if first is None else first
            last = meta.offset
        return OffsetRange(partition=0, start=first, end=last + 1)
    finally:
        await producer.stop()


def job(
    settings: Settings,
    job_id: str,
    tasks: list[str],
    train: list[OffsetRange],
    holdout: list[OffsetRange],
) -> TrainJob:
    return TrainJob(
        job_id=job_id, tasks=tasks, reason="manual", labelled_topic=settings.topic(LABELLED),
        train_ranges=train, holdout_ranges=holdout, parent_version=None, created_ts_ms=now_ms(),
    )  # fmt: skip


async def submit(settings: Settings, train_job: TrainJob) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish_job(producer, settings, train_job)
    finally:
        await producer.stop()


async def statuses(settings: Settings, *, timeout_s: float = 20.0) -> list[JobStatus]:
    """Every report on ``train-status`` so far, oldest first."""
    return [
        JobStatus.from_bytes(r.value)
        for r in await read_all(settings, settings.topic(TRAIN_STATUS), timeout_s=timeout_s)
    ]


async def wait_for_outcome(settings: Settings, job_id: str, timeout_s: float = 900) -> JobStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        for status in await statuses(settings):
            if status.job_id == job_id and status.state in (
                "finished",
                "rejected",
                "superseded",
                "failed",
            ):
                return status
        await asyncio.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not end in {timeout_s}s")


@contextlib.asynccontextmanager
async def running_trainer(settings: Settings) -> AsyncIterator[Trainer]:
    stop = asyncio.Event()
    trainer = Trainer(settings, progress_bar=False)
    task = asyncio.create_task(trainer.run(stop))
    ready = asyncio.create_task(trainer.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=180, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield trainer
    finally:
        stop.set()
        await asyncio.wait_for(task, 120)


def shuffled(rows: list[tuple[str, int]], seed: int = 0) -> list[tuple[str, int]]:
    labels = [label for _, label in rows]
    random.Random(seed).shuffle(labels)
    return [(text, label) for (text, _), label in zip(rows, labels, strict=True)]
