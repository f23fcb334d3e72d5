"""``streamtune train``: the trainer worker. Composition root of the train process.

It consumes ``train-jobs`` one job at a time and commits a job only when it is finished
(promoted, rejected, superseded or failed), so a trainer killed mid-job reruns the job after
a restart. Training runs in a thread of this process, never on a Faust event loop.

For each job:

1. read the examples of the job's ranges back from ``labelled`` (``streamtune.train.dataset``):
   the newest of the current regime plus a rehearsal sample from before it, and the holdout;
2. **fast head**: fit a new head on the live encoder's features of those examples, gate it
   and, if it wins, sign and publish it at once (seconds after the job arrived);
3. **LoRA**: train LoRA + head, warm-started from the live adapter (often the fast head just
   published), gate it against what is live now, and publish it if it wins;
4. report every step on ``train-status``.

The gate (``models.gate``) compares candidate and live model on the same holdout examples
with an exact McNemar test, and guards the task's anchor set against forgetting: at each
promotion, and against an absolute floor below the bootstrap adapter, whose anchor accuracy
every promoted manifest carries forward (``streamtune.train.reference``). The decision's
numbers go into the status event and the manifest.

A job whose data a newer drift made stale is dropped as ``superseded``: before it starts,
between its stages, during training and before anything is published (``job_watch``).
A failing attempt is retried with exponential backoff; after ``train_max_attempts`` the job
is marked failed and the live model is untouched.

A version is published once. A job's versions are named after it, and a trainer killed
between publishing and committing reruns the job: training again gives other bytes under
the same name. Before it publishes, the trainer looks the version up in the signed history
on ``model-updates`` (its follower reads it at the start of every attempt) and does not
publish a version that is out already: the first bytes stay the only ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from models.artifact import LoraSpec
from models.errors import AdapterRejected
from models.gate import GateRule
from models.loader import load_base, verify_adapter
from models.signing import Keyring, Signer, load_keyring, load_signer
from models.training import Progress, TrainConfig
from schemas import limits
from schemas.fields import now_ms
from schemas.messages import SEED_VERSION, AdapterManifest, JobStatus, TrainJob
from schemas.topics import TRAIN_JOBS, TRAIN_STATUS
from streamtune.core.clients import make_consumer, make_producer
from streamtune.core.errors import StreamtuneError
from streamtune.core.observability import Liveness, Metrics, observed
from streamtune.core.settings import Settings
from streamtune.core.validating_consumer import ValidatingConsumer
from streamtune.model_updates.follower import Update, UpdatesFollower
from streamtune.model_updates.history import history, verified_blob
from streamtune.model_updates.publisher import sign_and_publish
from streamtune.model_updates.records import AdapterNotFound
from streamtune.train.config import gate_rule, lora_spec, train_config
from streamtune.train.dataset import JobData, job_data
from streamtune.train.job_watch import JobWatch
from streamtune.train.reference import carried, chain_reference, is_bootstrap
from streamtune.train.stages import (
    Candidate,
    Evaluator,
    Live,
    fast_head_candidates,
    lora_candidates,
)

log = logging.getLogger(__name__)


class Cancelled(StreamtuneError, RuntimeError):
    """The trainer is stopping; the job stays uncommitted and reruns after a restart."""


class Superseded(StreamtuneError, RuntimeError):
    """A newer drift made the job's data stale; the job ends as ``superseded``."""


@dataclass
class Outcome:
    state: str  # finished | rejected | superseded | failed
    metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    message: str = ""


@dataclass
class TrainerStats:
    jobs: int = 0
    promoted: int = 0
    rejected: int = 0
    superseded: int = 0
    failed: int = 0
    attempts: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)


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
        # (task, version) -> the anchor floor's reference of the chain that version is in.
        self._references: dict[tuple[str, str], float | None] = {}
        self._progress_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self.metrics = Metrics()
        # A training step counts as progress: a long job is busy, not stalled.
        self.liveness = Liveness(settings.health_stall_s, self.metrics)

    # --- start-up ----------------------------------------------------------------------
    def _load(self) -> None:
        # Evaluation runs the model exactly as serve will (same precision).
        self.base = load_base(self.settings)
        self.device = self.base.device
        self.evaluator = Evaluator(
            self.base, self.settings.data_dir, self.settings.gate_anchor_size
        )

    async def run(self, stop: asyncio.Event) -> TrainerStats:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._load)
        self.signer: Signer = load_signer(self.settings)
        self.keyring: Keyring = load_keyring(self.settings)
        producer = self._producer = make_producer(self.settings)
        await producer.start()
        self.follower = UpdatesFollower(self.settings, list(_all_tasks()))
        await self.follower.start()
        self.jobs = JobWatch(self.settings)
        await self.jobs.start()
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
            await self._warm()
            self.ready.set()
            async with observed(
                self.settings,
                self.metrics,
                self.liveness,
                port=self.settings.train_metrics_port,
                group_id=self.settings.train_group_id,
                topics=[self.settings.topic(TRAIN_JOBS)],
                owned=raw.assignment,
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
            await self.jobs.stop()
            await self.follower.stop()
            await producer.stop()
            self._pool.shutdown(wait=True)
        return self.stats

    async def _warm(self) -> None:
        """Build the live adapters' predictors and anchor features now, so that the first
        job after a drift spends its seconds on the new data, not on start-up work."""
        self._live_updates.update(await self.follower.catch_up())
        tasks = [t for t, u in self._live_updates.items() if u.blob is not None]
        if not tasks:
            return
        live = await self._live_adapters(tasks)
        loop = asyncio.get_running_loop()
        for task in tasks:
            await loop.run_in_executor(self._pool, self.evaluator.anchor_features, task, live[task])

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
        """Jobs that failed or were superseded; adapters promoted; jobs the gate rejected."""
        self.stats.outcomes[job.job_id] = outcome
        self.stats.promoted += len(outcome.versions)
        if outcome.state == "failed":
            self.stats.failed += 1
        elif outcome.state == "superseded":
            self.stats.superseded += 1
        elif outcome.state == "rejected":
            self.stats.rejected += 1
            for task in set(job.tasks) - set(outcome.versions):
                self.metrics.rejections.labels(task=task, code="gate").inc()

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._cancel.is_set():
                raise Cancelled("stopping")
            await asyncio.sleep(min(0.2, end - time.monotonic()))

    def _stale(self, job: TrainJob) -> None:
        newer = self.jobs.superseding(job)
        if newer is not None:
            raise Superseded(f"drift job {newer} made its data stale")

    async def _attempt(self, job: TrainJob, attempt: int) -> Outcome:
        loop = asyncio.get_running_loop()
        outcome = Outcome("rejected")
        notes: list[str] = []
        try:
            self._stale(job)
            live = await self._live_adapters(job.tasks)
            data = await job_data(self.settings, job)
            await self._status(job, "progress", attempt, progress=0.0, message=data.summary)
            if self.settings.train_fast_head:
                heads = await loop.run_in_executor(self._pool, self._fast_heads, job, data, live)
                await self._publish(job, heads, live, outcome, notes)
                await self._status(
                    job, "progress", attempt, progress=0.1, message="; ".join(notes)[:2048]
                )
            figures, adapters = await loop.run_in_executor(
                self._pool, self._train_lora, job, attempt, data, live, loop
            )
            outcome.metrics.update(figures)
            await self._publish(job, adapters, live, outcome, notes)
        except Superseded as exc:
            outcome.state = "superseded"
            notes.append(str(exc))
        if outcome.state != "superseded":
            outcome.state = "finished" if outcome.versions else "rejected"
        outcome.message = "; ".join(notes)[:2048]
        return outcome

    async def _publish(
        self, job: TrainJob, candidates: list[Candidate], live: dict[str, Live],
        outcome: Outcome, notes: list[str],
    ) -> None:  # fmt: skip
        """Sign and publish the candidates the gate promoted; they become the live ones."""
        for c in candidates:
            outcome.metrics.update({f"{c.task}/{c.stage}/{k}": v for k, v in c.metrics.items()})
            if not c.decision.promote:
                notes.append(f"{c.task} {c.stage}: rejected, {c.decision.reason}")
                continue
            self._stale(job)  # nothing trained on stale data goes out after a drift
            if self._published_before(c, live, outcome, notes):
                continue
            await sign_and_publish(
                self._producer, self.settings, self.signer, task=c.task, version=c.version,
                blob=c.blob, base_model_id=self.base.model_id, num_labels=c.num_labels,
                parent_version=live[c.task].version, metrics=c.metrics, job_id=job.job_id,
            )  # fmt: skip
            self.follower.published[(c.task, c.version)] = hashlib.sha256(c.blob).hexdigest()
            reference = live[c.task].anchor_reference  # carried in c.metrics too
            self._references[(c.task, c.version)] = reference
            live[c.task] = Live(c.version, c.blob, reference)
            outcome.versions[c.task] = c.version
            notes.append(f"{c.task} {c.stage}: promoted {c.version}, {c.decision.reason}")

    def _published_before(
        self, c: Candidate, live: dict[str, Live], outcome: Outcome, notes: list[str]
    ) -> bool:
        """True when ``c.version`` is out already (an attempt before a restart published it):
        it is not published again, with other bytes or the same; it counts as this job's
        if it is still the live one."""
        sha = self.follower.published.get((c.task, c.version))
        if sha is None:
            return False
        same = sha == hashlib.sha256(c.blob).hexdigest()
        log.warning(
            "%s %s was published before (%s); not publishing it again",
            c.task, c.version, "same bytes" if same else "by an earlier run, with other bytes",
        )  # fmt: skip
        if live[c.task].version == c.version:
            outcome.versions[c.task] = c.version
        notes.append(f"{c.task} {c.stage}: {c.version} was published before a restart; kept")
        return True

    def _rule(self) -> GateRule:
        return gate_rule(self.settings.gate)

    def _spec(self) -> LoraSpec:
        return lora_spec(self.settings.train, self.base.encoder)

    def _config(self) -> TrainConfig:
        return train_config(self.settings.train)

    def _fast_heads(self, job: TrainJob, data: JobData, live: dict[str, Live]) -> list[Candidate]:
        """Runs in the training thread."""
        return fast_head_candidates(
            self.evaluator, job.job_id, data.datasets, data.holdouts, live, self._rule()
        )

    def _train_lora(
        self, job: TrainJob, attempt: int, data: JobData, live: dict[str, Live],
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[dict[str, float], list[Candidate]]:  # fmt: skip
        """Runs in the training thread: train, evaluate and gate; publishes nothing."""
        bar = None
        if self._progress_bar:
            from tqdm import tqdm

            bar = tqdm(desc=f"train {job.job_id}", unit="step", leave=False)
        last_report = [0.0]

        def on_progress(p: Progress) -> None:
            if self._cancel.is_set():
                raise Cancelled("stopping")
            self.liveness.record()
            self._stale(job)
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
                        job,
                        "progress",
                        attempt,
                        progress=0.1 + 0.9 * p.step / p.steps,
                        message=message,
                    ),
                    loop,
                )

        try:
            return lora_candidates(
                self.evaluator, job.job_id, data.datasets, data.holdouts, live, self._rule(),
                spec=self._spec(), config=self._config(), warm_start=self.settings.train_warm_start,
                on_progress=on_progress, check=lambda: self._stale(job),
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()

    async def _live_adapters(self, tasks: list[str]) -> dict[str, Live]:
        """The verified live adapter of each task, or its seed model: where none is live, or
        a signed ``revert_to_base`` manifest is. The follower never hands on a tombstone (it
        is unsigned), so no tombstone reverts the trainer's comparison either."""
        self._live_updates.update(await self.follower.catch_up())
        out = {}
        for task in tasks:
            update = self._live_updates.get(task)
            if update is not None and update.manifest is not None and update.blob is not None:
                try:
                    verify_adapter(update.manifest, update.blob, self.keyring)
                except AdapterRejected as exc:
                    log.warning(
                        "live adapter %s/%s does not verify (%s); comparing against the seed model",
                        task,
                        update.manifest.version,
                        exc,
                    )
                else:
                    reference = await self._anchor_reference(task, update.manifest, update.blob)
                    out[task] = Live(update.manifest.version, update.blob, reference)
                    continue
            out[task] = Live(SEED_VERSION, self.base.seed(task))  # no bootstrap: no floor
        return out

    async def _anchor_reference(
        self, task: str, manifest: AdapterManifest, blob: bytes
    ) -> float | None:
        """The anchor floor's reference for the verified live ``manifest``: the one its signed
        metrics carry; else the one of its chain (``streamtune.train.reference``), measured
        once per version; None (no floor) where the chain has no bootstrap."""
        examples = len(self.evaluator.anchor(task)[1])
        reference = carried(manifest.metrics, examples)
        if reference is not None:
            return reference
        key = (task, manifest.version)
        if key not in self._references:
            parent = (task, manifest.parent_version or SEED_VERSION)
            if parent in self._references and not is_bootstrap(manifest):
                self._references[key] = self._references[parent]
            else:
                try:
                    found = await self._chain_reference(task, manifest, blob, examples)
                except (AdapterRejected, AdapterNotFound, KafkaError, TimeoutError) as exc:
                    # Not cached: the next job looks again. Meanwhile the per-promotion
                    # tolerance still holds; refusing every promotion would stall the loop.
                    log.warning(
                        "%s/%s: cannot find the anchor floor's reference (%s); this attempt "
                        "runs without the floor", task, manifest.version, exc,
                    )  # fmt: skip
                    return None
                self._references[key] = found
        return self._references[key]

    async def _chain_reference(
        self, task: str, manifest: AdapterManifest, blob: bytes, examples: int
    ) -> float | None:
        root: AdapterManifest | None = manifest
        if not is_bootstrap(manifest):
            published, _ = await history(self.settings, task, self.keyring)
            reference, root = chain_reference(manifest, published, examples)
            if root is None:
                if reference is None:
                    log.info(
                        "%s/%s: no bootstrap in its chain, no anchor floor", task, manifest.version
                    )
                return reference
            blob = await verified_blob(self.settings, root, self.keyring)
        log.info("%s: measuring the anchor accuracy of bootstrap %s", task, root.version)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self.evaluator.anchor_accuracy, task, blob, root.version
        )

    async def _status(
        self, job: TrainJob, state: str, attempt: int, *, progress: float | None = None, message: str | None = None,
        metrics: dict[str, float] | None = None, versions: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        status = JobStatus(
            job_id=job.job_id, tasks=job.tasks, state=state, attempt=attempt, progress=progress, message=message,
            metrics=dict(list((metrics or {}).items())[: limits.MAX_METRICS]),  # a job of many tasks
            adapter_versions=versions or {}, source=self.source, ts_ms=now_ms(),
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
