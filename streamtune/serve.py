"""``streamtune serve``: the inference consumer. Composition root of the serve process.

Reads interactions in dynamic batches (up to ``serve_max_batch`` records or
``serve_max_wait_ms``), predicts with the live model of each task, publishes a Prediction
per interaction keyed by ``interaction_id`` and naming the adapter version that made it,
and commits only after the predictions were acknowledged. Bad records go to dead-letter.

Alongside, it follows model-updates. A new adapter is verified (sha256, signature, shape)
and built and warmed in a background thread at a lower CPU priority (so inference keeps the
cores meanwhile); the serve loop swaps it in between two batches, which costs a dictionary
assignment. A rejected adapter leaves the live model serving and
is reported on model-events.

Lifecycle: load base and seed models -> catch up on model-updates (so a late starter serves
the live adapter) -> join the consumer group -> serve until stopped -> finish and commit the
batch in flight -> leave the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener

from models.errors import AdapterRejected
from models.inference import Predictor, TextPrediction
from models.loader import load_base, load_verified
from models.signing import Keyring, load_keyring
from schemas import limits
from schemas.codec import dead_letter
from schemas.fields import now_ms
from schemas.messages import SEED_VERSION, DeadLetter, Interaction, Prediction
from schemas.topics import INTERACTIONS, PREDICTIONS, SERVE_TOPICS
from streamtune.core.clients import login_name, make_consumer, make_producer, require_topics
from streamtune.core.errors import StreamtuneError
from streamtune.core.layers import ServeSettings
from streamtune.core.observability import Liveness, Metrics, observed
from streamtune.core.settings import Settings
from streamtune.core.validating_consumer import Batch, Decoded, ValidatingConsumer
from streamtune.model_updates.follower import Update, UpdatesFollower
from streamtune.model_updates.publisher import event, publish_event

log = logging.getLogger(__name__)

#: Niceness of the adapter-build thread: building and warming a new adapter yields the CPU
#: to inference, so a swap does not slow the answers served meanwhile.
BUILD_THREAD_NICENESS = 10
#: How many recent answers ``ServeStats.acked`` keeps (for benchmarks and monitoring).
ACKED_KEPT = 200_000
#: How long a rebalance waits for the batch in flight before letting its partitions go
#: (their new owner then answers the batch again: at-least-once, never lost).
REVOKE_WAIT_S = 20.0
#: How long the broker waits for a replica to rejoin a rebalance: above ``REVOKE_WAIT_S``, so
#: that a replica finishing its batch on revocation is never expelled meanwhile (aiokafka's
#: default is the 10 s session timeout; an expelled replica cannot commit, and the new owner
#: answers its batch again).
REBALANCE_TIMEOUT_MS = int((REVOKE_WAIT_S + 40.0) * 1000)


def _lower_build_priority() -> None:
    """Runs once in the adapter-build thread: a higher niceness for this thread only (and
    the torch worker threads it starts), so inference wins the CPU while an adapter builds."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BUILD_THREAD_NICENESS)


@dataclass
class ServeStats:
    """Counters a running server keeps; read them for monitoring and benchmarks."""

    answered: int = 0
    skipped: int = 0
    batches: int = 0
    dead_lettered: int = 0
    swaps: int = 0
    rejected: int = 0
    swap_pauses_ms: list[float] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    #: ``(monotonic seconds, latency ms)`` per answer, when the broker acknowledged it;
    #: latency runs from the interaction's timestamp to that acknowledgement.
    acked: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=ACKED_KEPT))
    #: ``(task, version, answered when the update arrived, answered when it went live)`` per
    #: swap: answers given in between were served by the old model while the new one built.
    swap_log: list[tuple[str, str, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """One interaction's prediction, encoded and keyed, ready to send."""

    decoded: Decoded[Interaction]
    prediction: Prediction
    payload: bytes
    key: bytes


def _unanswerable(decoded: Decoded[Interaction], error: str, exc: Exception) -> DeadLetter:
    """A dead letter for a valid interaction that could not be answered, with why."""
    log.warning(
        "dead-lettering %s[%d]@%d (%s): %s",
        decoded.topic, decoded.partition, decoded.offset, error, exc,
    )  # fmt: skip
    return dead_letter(
        decoded.message.to_bytes(),
        error=error,
        reason=f"{type(exc).__name__}: {exc}",
        topic=decoded.topic,
        partition=decoded.partition,
        offset=decoded.offset,
        key=decoded.key,
    )


class _DrainOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another replica, finish committing what was processed."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def on_partitions_revoked(self, revoked: object) -> None:
        await self.server.finish_batch()

    async def on_partitions_assigned(self, assigned: object) -> None:
        log.info("serve assigned %s", assigned)


class Server:
    """One serve replica. ``await Server(settings).run(stop_event)``."""

    def __init__(self, settings: Settings, *, source: str | None = None) -> None:
        self.settings = settings
        #: This replica's own settings (group, tasks, batching, port): ``settings.serve``.
        self.config: ServeSettings = settings.serve
        self.tasks = self.config.served_tasks()
        self.source = source or f"serve-{socket.gethostname()}-{os.getpid()}"
        self.stats = ServeStats()
        self.metrics = Metrics()
        self.liveness = Liveness(settings.health.stall_s, self.metrics)
        self.live: dict[str, Predictor] = {}
        self.seeds: dict[str, bytes] = {}
        self._pending: dict[str, Predictor] = {}
        self._arrived: dict[str, int] = {}  # task -> answers given when its update arrived
        self._infer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._build = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="adapter-build", initializer=_lower_build_priority
        )
        self._commit_task: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Future[None] | None = None
        self._events: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    # --- start-up --------------------------------------------------------------------
    def _load_models(self) -> None:
        self.base = load_base(self.settings)
        for task in self.tasks:
            self.seeds[task] = self.base.seed(task)
            self.live[task] = self.base.predictor(self.seeds[task], task=task, version=SEED_VERSION)
            self.stats.versions[task] = SEED_VERSION
            self.metrics.set_live_adapter(task, SEED_VERSION)

    async def run(self, stop: asyncio.Event) -> ServeStats:
        loop = asyncio.get_running_loop()
        self.keyring: Keyring = load_keyring(self.settings)
        if not self.keyring.keys:
            log.warning(
                "no trusted adapter keys: every adapter will be rejected (see `streamtune keys`)"
            )
        # The broker and the topics first: a wrong address or a missing topic fails in a
        # second, not after the model has loaded.
        producer = self._producer = make_producer(self.settings)
        await producer.start()
        follower = self.follower = UpdatesFollower(self.settings, self.tasks)
        try:
            await require_topics(
                producer, [self.settings.topic(t) for t in SERVE_TOPICS], login_name(self.settings)
            )
            await follower.start()
            await loop.run_in_executor(self._build, self._load_models)
        except BaseException:
            await follower.stop()
            await producer.stop()
            self._infer.shutdown(wait=False)
            self._build.shutdown(wait=False)
            raise
        consumer: ValidatingConsumer[Interaction] | None = None
        follow_task = None
        try:
            # A late starter serves the live adapter from its first answer on.
            for update in (await follower.catch_up()).values():
                await self._apply_update(producer, update)
            self._swap_pending()
            follow_task = asyncio.create_task(self._follow(producer, follower, stop))
            consumer = self.consumer = ValidatingConsumer(
                self.settings,
                Interaction,
                [],
                group_id=self.config.group_id,
                producer=producer,
                consumer=make_consumer(
                    self.settings,
                    group_id=self.config.group_id,
                    rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
                ),
            )
            consumer.consumer.subscribe(
                [self.settings.topic(INTERACTIONS)], listener=_DrainOnRevoke(self)
            )
            await consumer.start()
            self.ready.set()
            log.info(
                "serving %s as %s",
                ", ".join(f"{t}={p.version}" for t, p in self.live.items()),
                self.source,
            )
            async with observed(
                self.settings,
                self.metrics,
                self.liveness,
                port=self.config.metrics_port,
                group_id=self.config.group_id,
                topics=[self.settings.topic(INTERACTIONS)],
                owned=consumer.consumer.assignment,
            ):
                await self._serve(consumer, producer, stop)
        finally:
            if follow_task is not None:
                follow_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow_task
            await self.drain()
            await asyncio.gather(*self._events)
            if consumer is not None:
                await consumer.stop()  # leaves the group: partitions move on at once
                self.stats.dead_lettered = consumer.dead_lettered
            await follower.stop()
            await producer.stop()
            self._infer.shutdown(wait=True)
            self._build.shutdown(wait=True)
        return self.stats

    # --- the serve loop ------------------------------------------------------------------
    async def _serve(
        self,
        consumer: ValidatingConsumer[Interaction],
        producer: AIOKafkaProducer,
        stop: asyncio.Event,
    ) -> None:
        loop = asyncio.get_running_loop()
        max_batch = self.config.max_batch
        max_wait = self.config.max_wait_ms / 1000
        while not stop.is_set():
            self._swap_pending()
            # A rebalance waits for this batch to be answered and committed (finish_batch),
            # so a partition moves on with its offsets committed: nothing answered twice.
            self._in_flight = loop.create_future()
            try:
                await self._answer_batch(consumer, producer, max_batch, max_wait, stop)
            finally:
                self._in_flight.set_result(None)

    async def _answer_batch(
        self,
        consumer: ValidatingConsumer[Interaction],
        producer: AIOKafkaProducer,
        max_batch: int,
        max_wait: float,
        stop: asyncio.Event,
    ) -> None:
        loop = asyncio.get_running_loop()
        batch = await self._next_batch(consumer, max_batch, max_wait, stop)
        if len(batch):
            await self._dispatch(consumer, producer, batch, loop)

    async def _dispatch(
        self,
        consumer: ValidatingConsumer[Interaction],
        producer: AIOKafkaProducer,
        batch: Batch[Interaction],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        decode_failures = len(batch.dead)
        answers = await loop.run_in_executor(self._infer, self._predict, batch)
        outputs: list[Awaitable[object]] = []
        topic = self.settings.topic(PREDICTIONS)
        for answer in answers:
            sent = await producer.send(topic, answer.payload, key=answer.key)
            sent.add_done_callback(self._acked_callback(answer.decoded.timestamp_ms))
            outputs.append(sent)
        predictions = [a.prediction for a in answers]
        # Commit batch N while batch N+1 is computed; commits stay in order.
        await self.drain()
        self._commit_task = asyncio.create_task(self._commit(consumer, batch, outputs))
        self.stats.batches += 1
        self.stats.answered += len(predictions)
        self._observe(batch, predictions, len(batch.dead) - decode_failures)

    def _observe(
        self, batch: Batch[Interaction], predictions: list[Prediction], unanswerable: int
    ) -> None:
        m = self.metrics
        m.batch_size.observe(len(batch))
        m.events.labels(outcome="answered").inc(len(predictions))
        skipped = len(batch.messages) - len(predictions) - unanswerable
        if skipped:
            m.events.labels(outcome="skipped").inc(skipped)
        for letter in batch.dead:
            m.events.labels(outcome="dead_lettered").inc()
            m.dead_letters.labels(code=letter.error).inc()
        for pred in predictions:
            m.latency.observe(pred.latency_ms / 1000)
        self.liveness.record(len(batch))

    def _acked_callback(self, interaction_ts_ms: int) -> Callable[[asyncio.Future[object]], None]:
        """Record an answer's latency when the broker acknowledges it: what a reader sees."""

        def done(future: asyncio.Future[object]) -> None:
            if not future.cancelled() and future.exception() is None:
                latency = max(0.0, float(now_ms() - interaction_ts_ms))
                self.stats.acked.append((time.monotonic(), latency))

        return done

    async def _next_batch(
        self,
        consumer: ValidatingConsumer[Interaction],
        max_batch: int,
        max_wait: float,
        stop: asyncio.Event,
    ) -> Batch[Interaction]:
        batch = await consumer.poll(max_records=max_batch, timeout_ms=100)
        deadline = time.monotonic() + max_wait
        while (
            len(batch)
            and len(batch) < max_batch
            and time.monotonic() < deadline
            and not stop.is_set()
        ):
            more = await consumer.poll(
                max_records=max_batch - len(batch),
                timeout_ms=max(1, int((deadline - time.monotonic()) * 1000)),
            )
            batch.messages.extend(more.messages)
            batch.dead.extend(more.dead)
            batch.next_offsets.update(more.next_offsets)
            if not len(more):
                break
        return batch

    def _predict(self, batch: Batch[Interaction]) -> list[Answer]:
        """Runs in the inference thread. Groups by task; every answer names its model version.

        A record that cannot be answered or encoded (the model raises on it, or its answer
        breaks the Prediction contract) goes to ``batch.dead`` with the reason, and the rest
        of the batch is answered: no single record stops serve, or meets it again on restart.
        """
        by_task: dict[str, list[Decoded[Interaction]]] = {}
        for decoded in batch.messages:
            by_task.setdefault(decoded.message.task, []).append(decoded)
        answers: list[Answer] = []
        for task, items in by_task.items():
            predictor = self.live.get(task)
            if predictor is None:  # a valid task this replica was not asked to serve
                self.stats.skipped += len(items)
                continue
            for decoded, result in self._infer_each(predictor, items, batch):
                try:
                    answers.append(self._answer(decoded, result, predictor.version))
                except Exception as exc:
                    batch.dead.append(_unanswerable(decoded, "unanswerable", exc))
        return answers

    @staticmethod
    def _infer_each(
        predictor: Predictor, items: list[Decoded[Interaction]], batch: Batch[Interaction]
    ) -> list[tuple[Decoded[Interaction], TextPrediction]]:
        """The batch at once; when that raises, record by record, so only the records the
        model cannot take are dead-lettered."""
        try:
            results = predictor.predict([d.message.text for d in items])
            return list(zip(items, results, strict=True))
        except Exception as exc:
            log.warning(
                "inference failed on a batch of %d; retrying one by one: %s", len(items), exc
            )
        out = []
        for decoded in items:
            try:
                out.append((decoded, predictor.predict([decoded.message.text])[0]))
            except Exception as exc:
                batch.dead.append(_unanswerable(decoded, "inference_failed", exc))
        return out

    def _answer(
        self, decoded: Decoded[Interaction], result: TextPrediction, version: str
    ) -> Answer:
        stamp = now_ms()
        # A record older than the contract's bound (an outage, an event-time stamp) is still
        # answered: its latency reads as the bound.
        latency = min(float(limits.MAX_LATENCY_MS), max(0.0, float(stamp - decoded.timestamp_ms)))
        prediction = Prediction(
            interaction_id=decoded.message.interaction_id,
            task=decoded.message.task,
            label=result.label,
            probs=result.probs,
            adapter_version=version,
            model_id=self.base.model_id,
            latency_ms=latency,
            ts_ms=stamp,
            token_count=result.token_count,
        )
        key = decoded.key or prediction.interaction_id.encode()
        return Answer(decoded, prediction, prediction.to_bytes(), key)

    async def _commit(
        self,
        consumer: ValidatingConsumer[Interaction],
        batch: Batch[Interaction],
        outputs: list[Awaitable[object]],
    ) -> None:
        # A rebalance that took the batch's partitions is logged there, never fatal.
        await consumer.commit(batch, outputs)

    async def drain(self) -> None:
        """Wait until every processed batch is committed."""
        task, self._commit_task = self._commit_task, None
        if task is not None:
            await task

    async def finish_batch(self, timeout_s: float = REVOKE_WAIT_S) -> None:
        """Before partitions move: let the batch in flight be answered, then commit it all."""
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(in_flight), timeout_s)
        await self.drain()

    # --- hot swap ------------------------------------------------------------------------
    def _swap_pending(self) -> None:
        """Between two batches: make built adapters live. Costs a dict assignment per task."""
        if not self._pending:
            return
        began = time.perf_counter()
        pending, self._pending = self._pending, {}
        self.live.update(pending)
        pause_ms = (time.perf_counter() - began) * 1000
        self._events = [t for t in self._events if not t.done()]  # keep only unsent reports
        for task, predictor in pending.items():
            self.stats.swaps += 1
            self.stats.swap_pauses_ms.append(pause_ms)
            self.stats.versions[task] = predictor.version
            self.metrics.swaps.labels(task=task).inc()
            self.metrics.set_live_adapter(task, predictor.version)
            arrived = self._arrived.pop(task, self.stats.answered)
            self.stats.swap_log.append((task, predictor.version, arrived, self.stats.answered))
            log.info(
                "swapped %s to %s (%.3f ms between batches)", task, predictor.version, pause_ms
            )
            self._events.append(
                asyncio.create_task(
                    self._report(self._producer, task, predictor.version, "swapped")
                )
            )

    async def _follow(
        self, producer: AIOKafkaProducer, follower: UpdatesFollower, stop: asyncio.Event
    ) -> None:
        """Apply updates until stopped. If following ends any other way, serve can no longer
        take a new model: ``/healthz`` says so, rather than stay green on a stale model."""
        try:
            while not stop.is_set():
                for update in await follower.poll(timeout_ms=500):
                    try:
                        await self._apply_update(producer, update)
                    except Exception as exc:  # one update never ends the following
                        log.exception("could not apply an update of %s: %r", update.task, exc)
        except Exception as exc:  # answering goes on, on the model it has; /healthz is red
            self.liveness.fail(f"following model-updates stopped: {exc!r}")
            log.exception("following model-updates stopped")

    async def _apply_update(self, producer: AIOKafkaProducer, update: Update) -> None:
        """Verify and build off the hot path; queue for the swap or report the rejection."""
        loop = asyncio.get_running_loop()
        task = update.task
        arrived = self.stats.answered
        rejection = update.rejection()
        if update.manifest is None:  # a tombstone: unsigned, so never a return to the seed
            await self._reject(
                producer, task, SEED_VERSION, rejection or AdapterRejected("unsigned", "")
            )
            return
        manifest = update.manifest
        if rejection is None and manifest.revert_to_base:
            try:  # the follower checked it; a revert is verified here too, like an adapter
                self.keyring.verify(manifest)
            except AdapterRejected as exc:
                await self._reject(producer, task, manifest.version, exc)
                return
            predictor = await loop.run_in_executor(
                self._build,
                lambda: self.base.predictor(self.seeds[task], task=task, version=SEED_VERSION),
            )
            self._pending[task], self._arrived[task] = predictor, arrived
            return
        if rejection is not None or update.blob is None:
            await self._reject(
                producer, task, manifest.version, rejection or AdapterRejected("malformed", "")
            )
            return
        try:
            predictor = await loop.run_in_executor(
                self._build, load_verified, self.base, manifest, update.blob, self.keyring
            )
        except AdapterRejected as exc:
            await self._reject(producer, task, manifest.version, exc)
            return
        self._pending[task], self._arrived[task] = predictor, arrived

    async def _reject(
        self, producer: AIOKafkaProducer, task: str, version: str, exc: AdapterRejected
    ) -> None:
        self.stats.rejected += 1
        self.metrics.rejections.labels(task=task, code=exc.kind).inc()
        live = self.live[task].version if task in self.live else "none"
        log.warning("rejected adapter %s/%s (%s); still serving %s", task, version, exc, live)
        await self._report(producer, task, version, "rejected", exc.kind, exc.reason)

    async def _report(
        self,
        producer: AIOKafkaProducer,
        task: str,
        version: str,
        kind: str,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        try:
            await publish_event(
                producer, self.settings, event(task, version, kind, self.source, error, reason)
            )
        except Exception as exc:  # an event is information; never stop serving over it
            log.warning("could not publish %s event for %s/%s: %s", kind, task, version, exc)


@contextlib.asynccontextmanager
async def running(settings: Settings, start_timeout_s: float = 180.0) -> AsyncIterator[Server]:
    """A Server in this event loop, ready to answer; stopped gracefully on exit.

    For benchmarks and tests; ``streamtune serve`` runs one until a signal instead."""
    stop = asyncio.Event()
    server = Server(settings)
    task = asyncio.create_task(server.run(stop))
    ready = asyncio.create_task(server.ready.wait())
    done, _ = await asyncio.wait(
        {task, ready}, timeout=start_timeout_s, return_when=asyncio.FIRST_COMPLETED
    )
    if task in done:
        task.result()  # start-up failed: raise its error
    if ready not in done:
        stop.set()
        raise StreamtuneError(f"serve did not become ready within {start_timeout_s:.0f}s")
    try:
        yield server
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
