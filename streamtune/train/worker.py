"""``streamtune train``: the trainer worker. Composition root of the train process.

It consumes ``train-jobs`` one job at a time and commits a job only when it is finished
(promoted, rejected or failed), so a trainer killed mid-job reruns the job after a restart.
Training runs in a thread of this process, never on a Faust event loop.

For each job:

1. read the examples of the job's ``train_ranges`` and ``rehearsal_ranges`` back from
   ``labelled``, validate them (bad ones are counted and skipped) and deduplicate them by
   ``interaction_id``; the ``holdout_ranges`` give the holdout set, and each task's anchor set
   (a fixed sample of its held-out seed data) guards against forgetting;
2. train LoRA (warm-started from the live adapter, or fresh from the base) with early
   stopping on a validation split;
3. gate: the new adapter is promoted only if its holdout macro-F1 beats the live model's by
   ``gate_min_improvement`` and its anchor macro-F1 falls by at most ``gate_anchor_tolerance``;
4. sign and publish promoted adapters on ``model-updates``; report every step on
   ``train-status``.

A failing attempt is retried with exponential backoff; after ``train_max_attempts`` the job
is marked failed and the live model is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from aiokafka import AIOKafkaProducer

from models.artifact import LoraSpec
from models.errors import AdapterRejected
from models.evaluation import evaluate
from models.gate import GateRule
from models.loader import load_base, verify_adapter
from models.seed import anchor_examples
from models.signing import Keyring, Signer, load_keyring, load_signer
from models.training import (
    Progress,
    TaskData,
    TrainConfig,
    export_task_adapter,
    lora_tensors,
    train,
)
from schemas.fields import now_ms
from schemas.messages import SEED_VERSION, JobStatus, TrainJob
from schemas.topics import TRAIN_JOBS, TRAIN_STATUS
from streamtune.core.clients import make_consumer, make_producer
from streamtune.core.errors import StreamtuneError
from streamtune.core.observability import Liveness, Metrics, observed
from streamtune.core.settings import Settings
from streamtune.core.validating_consumer import ValidatingConsumer
from streamtune.model_updates.follower import Update, UpdatesFollower
from streamtune.model_updates.publisher import sign_and_publish
from streamtune.train.dataset import job_data

log = logging.getLogger(__name__)


class Cancelled(StreamtuneError, RuntimeError):
    """The trainer is stopping; the job stays uncommitted and reruns after a restart."""


@dataclass
class Outcome:
    state: str  # finished | rejected | failed
    metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    message: str = ""


@dataclass
class Candidate:
    """A trained adapter of one task, evaluated and gated, not yet published."""

    task: str
    version: str
    blob: bytes
    num_labels: int
    metrics: dict[str, float]
    promote: bool
    reason: str


@dataclass
class TrainerStats:
    jobs: int = 0
    promoted: int = 0
    rejected: int = 0
    failed: int = 0
    attempts: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass
class _Live:
    version: str
    blob: bytes


class Trainer:
    """One trainer worker. ``await Trainer(settings).run(stop_event)``."""

    def __init__(
        self, settings: Settings, *, source: str | None = None, progress_bar: bool | None = None
    ) -> None:
        self.settings = settings
        self.source = source or f"trainer-{socket.gethostname()}-{os.getpid()}"
        self.stats = TrainerStats()
        self.ready = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="train")
        self._cancel = threading.Event()
        self._live_updates: dict[str, Update] = {}
        self._progress_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self.metrics = Metrics()
        # A training step counts as progress: a long job is busy, not stalled.
        self.liveness = Liveness(settings.health_stall_s, self.metrics)

    # --- start-up ----------------------------------------------------------------------
    def _load(self) -> None:
        # Evaluation runs the model exactly as serve will (same precision).
        self.base = load_base(self.settings)
        self.device = self.base.device

    async def run(self, stop: asyncio.Event) -> TrainerStats:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._load)
        self.signer: Signer = load_signer(self.settings)
        self.keyring: Keyring = load_keyring(self.settings)
        producer = self._producer = make_producer(self.settings)
        await producer.start()
        self.follower = UpdatesFollower(self.settings, list(_all_tasks()))
        await self.follower.start()
        raw = make_consumer(
            self.settings, self.settings.topic(TRAIN_JOBS), group_id=self.settings.train_group_id,
            max_poll_interval_ms=self.settings.train_max_poll_interval_ms, max_poll_records=1,
        )  # fmt: skip
        consumer = ValidatingConsumer(
            self.settings,
            TrainJob,
            [],
            group_id=self.settings.train_group_id,
            producer=producer,
            consumer=raw,
        )
        watcher = asyncio.create_task(self._watch(stop))
        try:
            await consumer.start()
            self.ready.set()
            async with observed(
                self.settings,
                self.metrics,
                self.liveness,
                port=self.settings.train_metrics_port,
                group_id=self.settings.train_group_id,
                topics=[self.settings.topic(TRAIN_JOBS)],
            ):
                while not stop.is_set():
                    batch = await consumer.poll(max_records=1, timeout_ms=500)
                    for decoded in batch.messages:
                        # The job holds its record uncommitted while it runs: busy, not stalled.
                        with self.liveness.busy(self.settings.train_job_timeout_s):
                            await self.handle(decoded.message)
                    for letter in batch.dead:
                        self.metrics.dead_letters.labels(code=letter.error).inc()
                    await consumer.commit(batch)
                    self.liveness.record(len(batch))
        except Cancelled:
            log.warning(
                "trainer stopping mid-job: the job stays uncommitted and reruns after a restart"
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await consumer.stop()
            await self.follower.stop()
            await producer.stop()
            self._pool.shutdown(wait=True)
        return self.stats

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._cancel.set()  # the training thread checks it between steps

    # --- one job -----------------------------------------------------------------------
    async def handle(self, job: TrainJob) -> Outcome:
        """Run a job with retries; publish its outcome. Raises Cancelled when stopping."""
        self.stats.jobs += 1
        attempts = self.settings.train_max_attempts
        error = ""
        for attempt in range(1, attempts + 1):
            self.stats.attempts += 1
            await self._status(
                job, "started", attempt, progress=0.0, message=f"attempt {attempt} of {attempts}"
            )
            try:
                outcome = await self._attempt(job, attempt)
            except Cancelled:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("job %s attempt %d/%d failed: %s", job.job_id, attempt, attempts, error)
                await self._status(
                    job, "progress", attempt, message=f"attempt {attempt} failed: {error}"[:2048]
                )
                if attempt < attempts:
                    await self._sleep(self.settings.train_retry_backoff_s * 2 ** (attempt - 1))
                continue
            await self._status(
                job,
                outcome.state,
                attempt,
                progress=1.0,
                message=outcome.message,
                metrics=outcome.metrics,
                versions=outcome.versions,
            )
            self._count(job, outcome)
            return outcome
        outcome = Outcome(
            "failed", message=f"failed after {attempts} attempts; last error: {error}"[:2048]
        )
        await self._status(job, "failed", attempts, message=outcome.message)
        self._count(job, outcome)
        return outcome

    def _count(self, job: TrainJob, outcome: Outcome) -> None:
        """Jobs that failed; adapters (one per task) promoted or rejected by the gate."""
        self.stats.outcomes[job.job_id] = outcome
        if outcome.state == "failed":
            self.stats.failed += 1
            return
        self.stats.promoted += len(outcome.versions)
        self.stats.rejected += len(job.tasks) - len(outcome.versions)
        for task in set(job.tasks) - set(outcome.versions):
            self.metrics.rejections.labels(task=task, code="gate").inc()

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._cancel.is_set():
                raise Cancelled("stopping")
            await asyncio.sleep(min(0.2, end - time.monotonic()))

    async def _attempt(self, job: TrainJob, attempt: int) -> Outcome:
        loop = asyncio.get_running_loop()
        live = await self._live_adapters(job.tasks)

        def warm_head(task: str) -> dict[str, torch.Tensor] | None:
            return lora_tensors(live[task].blob)[1] if self.settings.train_warm_start else None

        data = await job_data(self.settings, job, warm_head)
        await self._status(job, "progress", attempt, progress=0.0, message=data.summary)
        metrics, candidates = await loop.run_in_executor(
            self._pool, self._train_and_gate, job, attempt, data.datasets, data.holdouts, live, loop
        )
        # Signing and publishing happen here, on the event loop; the thread only decides.
        promoted: dict[str, str] = {}
        for c in candidates:
            if c.promote:
                await sign_and_publish(
                    self._producer, self.settings, self.signer, task=c.task, version=c.version,
                    blob=c.blob, base_model_id=self.base.model_id, num_labels=c.num_labels,
                    parent_version=live[c.task].version, metrics=c.metrics, job_id=job.job_id,
                )  # fmt: skip
                promoted[c.task] = c.version
        reasons = "; ".join(
            f"{c.task}: {'promoted ' + c.version + ' (' if c.promote else ''}{c.reason}{')' if c.promote else ''}"
            for c in candidates
        )
        return Outcome("finished" if promoted else "rejected", metrics, promoted, reasons[:2048])

    def _spec(self) -> LoraSpec:
        s = self.settings
        return LoraSpec(
            r=s.train_lora_r,
            lora_alpha=s.train_lora_alpha,
            lora_dropout=s.train_lora_dropout,
            target_modules=s.lora_targets(),
        )

    def _config(self) -> TrainConfig:
        s = self.settings
        return TrainConfig(
            epochs=s.train_epochs, batch_size=s.train_batch_size, learning_rate=s.train_learning_rate,
            weight_decay=s.train_weight_decay, max_length=s.train_max_length, seed=s.train_seed,
            class_weighted=s.train_class_weighted, validation_fraction=s.train_validation_fraction,
            patience=s.train_patience, bf16=s.train_bf16,
        )  # fmt: skip

    def _train_and_gate(
        self, job: TrainJob, attempt: int, datasets: list[TaskData], holdouts: dict[str, tuple[list[str], list[int]]],
        live: dict[str, _Live], loop: asyncio.AbstractEventLoop,
    ) -> tuple[dict[str, float], list[Candidate]]:  # fmt: skip
        """Runs in the training thread: train, evaluate and gate; publishes nothing."""
        spec = self._spec()
        lora_init = None
        primary = live[job.tasks[0]]
        if self.settings.train_warm_start and primary.version != SEED_VERSION:
            lora, _, config = lora_tensors(primary.blob)
            if config.lora == spec:
                lora_init = lora
        bar = None
        if self._progress_bar:
            from tqdm import tqdm

            bar = tqdm(desc=f"train {job.job_id}", unit="step", leave=False)
        last_report = [0.0]

        def on_progress(p: Progress) -> None:
            if self._cancel.is_set():
                raise Cancelled("stopping")
            self.liveness.record()
            if bar is not None:
                bar.total = p.steps
                bar.update(1)
                bar.set_postfix(loss=f"{p.loss:.3f}", ex_s=f"{p.examples_per_s:.0f}")
            now = time.monotonic()
            if now - last_report[0] >= 5.0 or p.step == p.steps:
                last_report[0] = now
                message = f"epoch {p.epoch + 1}/{p.epochs} step {p.step}/{p.steps} loss {p.loss:.4f} ({p.examples_per_s:.0f} examples/s)"
                # Fire and forget: progress is information, the thread never waits on it.
                asyncio.run_coroutine_threadsafe(
                    self._status(
                        job, "progress", attempt, progress=p.step / p.steps, message=message
                    ),
                    loop,
                )

        try:
            result = train(
                self.base.encoder, self.base.tokenizer, datasets, spec=spec, config=self._config(),
                device=self.device, lora_init=lora_init, on_progress=on_progress,
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
        metrics: dict[str, float] = {
            "train_examples_per_s": round(result.examples_per_s, 1),
            "epochs": result.epochs_run,
        }
        rule = GateRule(self.settings.gate_min_improvement, self.settings.gate_anchor_tolerance)
        candidates = []
        for data in datasets:
            task = data.task
            blob = export_task_adapter(
                result.model,
                task,
                num_labels=data.num_labels,
                base_model_id=self.base.model_id,
                spec=spec,
            )
            sets = {
                "holdout": holdouts[task],
                "anchor": anchor_examples(
                    task, self.settings.data_dir, self.settings.gate_anchor_size
                ),
            }
            new = evaluate(self.base, blob, task, data.num_labels, sets)
            old = evaluate(self.base, live[task].blob, task, data.num_labels, sets)
            task_metrics = {
                **{f"new_{k}": round(v, 4) for k, v in new.items()},
                **{f"live_{k}": round(v, 4) for k, v in old.items()},
            }
            metrics.update({f"{task}/{k}": v for k, v in task_metrics.items()})
            decision = rule.decide(new, old)
            version = job.job_id if len(datasets) == 1 else f"{job.job_id}.{task}"
            candidates.append(
                Candidate(task, version, blob, data.num_labels, task_metrics, decision.promote, decision.reason)
            )  # fmt: skip
        return metrics, candidates

    async def _live_adapters(self, tasks: list[str]) -> dict[str, _Live]:
        """The verified live adapter of each task, or its seed model."""
        self._live_updates.update(await self.follower.catch_up())
        out = {}
        for task in tasks:
            update = self._live_updates.get(task)
            if update is not None and update.manifest is not None and update.blob is not None:
                try:
                    verify_adapter(update.manifest, update.blob, self.keyring)
                    out[task] = _Live(update.manifest.version, update.blob)
                    continue
                except AdapterRejected as exc:
                    log.warning(
                        "live adapter %s/%s does not verify (%s); comparing against the seed model",
                        task,
                        update.manifest.version,
                        exc,
                    )
            blob = self.base.seed(task)
            out[task] = _Live(SEED_VERSION, blob)
        return out

    async def _status(
        self, job: TrainJob, state: str, attempt: int, *, progress: float | None = None, message: str | None = None,
        metrics: dict[str, float] | None = None, versions: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        status = JobStatus(
            job_id=job.job_id, tasks=job.tasks, state=state, attempt=attempt, progress=progress, message=message,
            metrics=metrics or {}, adapter_versions=versions or {}, source=self.source, ts_ms=now_ms(),
        )  # fmt: skip
        log.info("job %s %s: %s", job.job_id, state, message or "")
        self.metrics.jobs.labels(state=state).inc()
        self.liveness.record()
        if state == "finished":
            for task, version in (versions or {}).items():
                self.metrics.set_live_adapter(task, version)
        try:
            await self._producer.send_and_wait(
                self.settings.topic(TRAIN_STATUS), status.to_bytes(), key=job.key.encode()
            )
        except Exception as exc:  # status is information; never fail a job over it
            log.warning("could not publish status of job %s: %s", job.job_id, exc)


def _all_tasks() -> tuple[str, ...]:
    from schemas.tasks import known_tasks

    return known_tasks()


async def publish_job(producer: AIOKafkaProducer, settings: Settings, job: TrainJob) -> None:
    """Put a train job on ``train-jobs`` (used by the Faust trigger, tests and the CLI)."""
    await producer.send_and_wait(settings.topic(TRAIN_JOBS), job.to_bytes(), key=job.key.encode())
