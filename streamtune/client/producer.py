"""The asynchronous producer client: validated, keyed, batched, idempotent sends.

How a record travels:

1. ``send_interaction``/``send_feedback`` build the message with the wire schema
   (:mod:`schemas.messages`), so a bad field raises :class:`InvalidMessage` at once and
   nothing of that call is sent; the value is the schema's own bytes (``to_bytes``).
2. The key is the ``interaction_id``; its partition is the one Kafka's default partitioner
   (murmur2, as Java's and aiokafka's) picks, so interactions and their feedback
   co-partition, as the worker's join needs.
3. The record is appended to an open batch for its topic-partition. A batch goes to the
   producer (``send_batch``) when it is full, ``linger_ms`` after its first record, or on
   :meth:`StreamtuneProducer.flush`. Batches of one partition are handed over in the order
   they were filled, and the idempotent producer (``acks=all``, one request in flight per
   partition) keeps that order through retries: records of one partition arrive in the
   order they were sent, exactly once.
4. Backpressure: at most ``max_in_flight`` records may be unacknowledged (open, queued or
   in flight). A send beyond that waits for the oldest batch's acknowledgement, so a slow
   broker slows the caller instead of filling memory.

A batch the broker does not acknowledge (after the producer's own retries) is reported as a
:class:`DeliveryError` by the next send or :meth:`~StreamtuneProducer.flush`, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from pydantic import TypeAdapter, ValidationError

from schemas import limits
from schemas.base import Message, describe
from schemas.fields import ShortStr, now_ms
from schemas.messages import Feedback, Interaction
from schemas.topics import FEEDBACK, INTERACTIONS
from streamtune.core.clients import login_name, make_producer, require_topics
from streamtune.core.errors import ConfigError, DeliveryError, InvalidMessage
from streamtune.core.settings import Settings

log = logging.getLogger(__name__)

#: Unacknowledged records a client holds before a send waits (about 4 MB of tweets).
DEFAULT_MAX_IN_FLIGHT = 20_000
#: How long a batch waits for more records before it is handed to the producer.
DEFAULT_LINGER_MS = 5.0

_SOURCE: TypeAdapter[str] = TypeAdapter(ShortStr)


def build(message_type: type[Message], **fields: Any) -> Message:
    """``message_type(**fields)``, with a schema violation turned into :class:`InvalidMessage`.

    >>> build(Feedback, interaction_id="a-1", task="tfns-sentiment", label=7, ts_ms=now_ms())
    Traceback (most recent call last):
        ...
    streamtune.core.errors.InvalidMessage: invalid Feedback: label: label 7 is out of range for task 'tfns-sentiment' (0..2); nothing was sent
    """
    try:
        return message_type(**fields)
    except ValidationError as exc:
        where = tuple(dict.fromkeys(str(err["loc"][0]) for err in exc.errors() if err["loc"]))
        raise InvalidMessage(message_type.__name__, describe(exc), where) from None


def encode(message: Message) -> tuple[bytes, bytes]:
    """The record's key (the ``interaction_id``) and value (the schema's bytes)."""
    value = message.to_bytes()
    if len(value) > limits.MAX_RECORD_BYTES:  # consumers would dead-letter it
        raise InvalidMessage(
            type(message).__name__,
            f"record is {len(value)} bytes; the limit is {limits.MAX_RECORD_BYTES} bytes",
        )
    return message.interaction_id.encode(), value  # type: ignore[attr-defined]


@dataclass(eq=False)
class _Partition:
    """The client's side of one topic-partition: the open batch and those waiting to go."""

    topic: str
    partition: int
    open: BatchBuilder | None = None
    open_count: int = 0
    timer: asyncio.TimerHandle | None = None
    queued: deque[tuple[BatchBuilder, int]] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class _Submitted:
    """A batch handed to the producer: its delivery future and how many records it holds."""

    future: asyncio.Future[Any]
    count: int
    state: _Partition
    settled: bool = False


class StreamtuneProducer:
    """Publish interactions and feedback to streamtune, validated and exactly once.

    Use it as an async context manager; leaving the block flushes and closes it::

        async with StreamtuneProducer(bootstrap_servers="kafka:9092") as client:
            await client.send_interaction("order-42", task="tfns-sentiment", text="$AAPL beats")
            await client.feedback_from("desk").send("order-42", task="tfns-sentiment", label=2)

    ``settings`` defaults to ``Settings()`` (the ``STREAMTUNE_*`` environment: bootstrap
    servers, topic prefix, TLS and SASL); keyword ``settings_fields`` override single fields.
    ``source`` is the default ``source`` of every interaction and feedback record sent.
    A send returns once the record is batched (not acknowledged); :meth:`flush` waits for
    every acknowledgement. One client is meant for one event loop; it may be shared by any
    number of tasks on that loop.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        source: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        linger_ms: float = DEFAULT_LINGER_MS,
        producer_options: dict[str, Any] | None = None,
        **settings_fields: Any,
    ) -> None:
        if settings is None:
            settings = Settings(**settings_fields)
        elif settings_fields:
            settings = Settings(**{**settings.model_dump(), **settings_fields})
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1, not {max_in_flight}")
        if linger_ms < 0:
            raise ConfigError(f"linger_ms must not be negative, not {linger_ms}")
        self.settings = settings
        self.source = source
        self.max_in_flight = max_in_flight
        self.linger_s = linger_ms / 1000
        self._producer_options = producer_options or {}
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._states: dict[tuple[str, int], _Partition] = {}
        self._pending: deque[_Submitted] = deque()  # handed to the producer, oldest first
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []
        self._unacked = 0
        #: Records accepted (validated and batched) and records acknowledged by the broker.
        self.sent = 0
        self.acknowledged = 0

    # --- Life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (a failed start leaves nothing open). Topics are checked on first use."""
        if self._producer is not None:
            return
        producer = make_producer(self.settings, **self._producer_options)
        await producer.start()
        self._producer = producer

    async def close(self) -> None:
        """Flush, then disconnect; raises :class:`DeliveryError` if a record was lost."""
        if self._producer is None:
            return
        try:
            await self.flush()
        finally:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
            return
        # The block failed: still deliver what it sent, but let its error be the one seen.
        try:
            await self.close()
        except Exception:
            log.exception("streamtune client: flushing on exit after %r failed", exc)

    # --- Sending ------------------------------------------------------------------------
    async def send_interaction(
        self,
        interaction_id: str,
        *,
        task: str,
        text: str,
        ts_ms: int | None = None,
        entity: str | None = None,
        source: str | None = None,
    ) -> None:
        """Validate and send an :class:`~schemas.messages.Interaction`, keyed by its id."""
        message = build(
            Interaction,
            interaction_id=interaction_id,
            task=task,
            text=text,
            ts_ms=now_ms() if ts_ms is None else ts_ms,
            entity=entity,
            source=self.source if source is None else source,
        )
        await self._send(INTERACTIONS, *encode(message))

    async def send_feedback(
        self,
        interaction_id: str,
        *,
        task: str,
        label: int,
        ts_ms: int | None = None,
        source: str | None = None,
    ) -> None:
        """Validate and send the true ``label`` of an interaction, keyed by its id."""
        message = build(
            Feedback,
            interaction_id=interaction_id,
            task=task,
            label=label,
            ts_ms=now_ms() if ts_ms is None else ts_ms,
            source=self.source if source is None else source,
        )
        await self._send(FEEDBACK, *encode(message))

    def feedback_from(self, source: str, *, task: str | None = None) -> FeedbackSender:
        """A helper that sends feedback carrying ``source`` (and, if given, ``task``).

        The worker's poisoning defence trusts labels per source, so a labeller should say
        who it is on every record; this binds it once."""
        return FeedbackSender(self, source, task)

    async def flush(self) -> None:
        """Send every batch now and wait until the broker has acknowledged every record
        sent so far. Raises :class:`DeliveryError` naming what was not acknowledged."""
        for state in self._states.values():
            self._detach(state)
        await asyncio.gather(
            *(self._submit(state) for state in self._states.values() if state.queued)
        )
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._pending:
            submitted = self._pending.popleft()
            with contextlib.suppress(Exception):  # recorded by _settle
                await submitted.future
            self._settle(submitted)
        self._raise_failures()

    # --- Internals ----------------------------------------------------------------------
    async def _send(self, base_topic: str, key: bytes, value: bytes) -> None:
        self._raise_failures()
        self._started()
        topic = self.settings.topic(base_topic)
        partitions = self._partitions.get(topic) or await self._lookup(topic)
        partition = self._partitioner(key, partitions, partitions)
        state = self._states.get((topic, partition))
        if state is None:
            state = self._states[(topic, partition)] = _Partition(topic, partition)
        if state.open is None:
            self._open(state)
        if state.open.append(timestamp=None, key=key, value=value) is None:  # type: ignore[union-attr]
            self._detach(state)  # full: it goes, and a new one takes the record
            self._open(state)
            if state.open.append(timestamp=None, key=key, value=value) is None:  # type: ignore[union-attr]
                raise InvalidMessage(base_topic, f"record of {len(value)} bytes fits no batch")
        state.open_count += 1
        self._unacked += 1
        self.sent += 1
        if state.queued:
            await self._submit(state)
        if self._unacked > self.max_in_flight:
            await self._wait_below(self.max_in_flight)

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise ConfigError(
                "the client is not started (or closed); use `async with StreamtuneProducer(...)`"
            )
        return self._producer

    async def _lookup(self, topic: str) -> list[int]:
        """The partitions of ``topic``, failing at once (naming the fix) when it is missing."""
        producer = self._started()
        await require_topics(producer, [topic], login_name(self.settings))
        partitions = sorted(await producer.partitions_for(topic))
        self._partitions[topic] = partitions
        return partitions

    def _open(self, state: _Partition) -> None:
        state.open, state.open_count = self._started().create_batch(), 0
        if self.linger_s > 0:
            builder = state.open
            state.timer = asyncio.get_running_loop().call_later(
                self.linger_s, self._linger_over, state, builder
            )

    def _detach(self, state: _Partition) -> None:
        """Move the open batch (if it has records) to the partition's queue, in order."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if state.open is not None and state.open_count:
            state.queued.append((state.open, state.open_count))
            state.open, state.open_count = None, 0

    def _linger_over(self, state: _Partition, builder: BatchBuilder) -> None:
        if state.open is not builder:
            return
        state.timer = None
        self._detach(state)
        task = asyncio.get_running_loop().create_task(self._submit(state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, state: _Partition) -> None:
        """Hand the partition's queued batches to the producer, oldest first. Whoever holds
        the lock submits every queued batch, so they go in the order they were filled."""
        producer = self._started()
        async with state.lock:
            while state.queued:
                builder, count = state.queued[0]
                try:
                    future = await producer.send_batch(
                        builder, state.topic, partition=state.partition
                    )
                except Exception as exc:
                    state.queued.popleft()
                    self._unacked -= count
                    self._failures.append(
                        DeliveryError(
                            f"{count} records for {state.topic}[{state.partition}] were not "
                            f"sent: {exc!r}"
                        )
                    )
                    continue
                state.queued.popleft()
                submitted = _Submitted(future, count, state)
                self._pending.append(submitted)
                future.add_done_callback(lambda _, s=submitted: self._settle(s))

    def _settle(self, submitted: _Submitted) -> None:
        """Count a finished batch as acknowledged or failed, once: from its future's callback,
        or earlier from whoever awaited it (a callback runs only at the loop's next turn)."""
        if submitted.settled or not submitted.future.done():
            return
        submitted.settled = True
        self._unacked -= submitted.count
        future, state = submitted.future, submitted.state
        exc = asyncio.CancelledError() if future.cancelled() else future.exception()
        if exc is None:
            self.acknowledged += submitted.count
            return
        self._failures.append(
            DeliveryError(
                f"{submitted.count} records for {state.topic}[{state.partition}] were not "
                f"acknowledged: {exc!r}"
            )
        )

    async def _wait_below(self, limit: int) -> None:
        """Backpressure: wait for the oldest acknowledgements until at most ``limit`` records
        are unacknowledged, handing over open batches when nothing else is in flight."""
        while self._unacked > limit:
            while self._pending and self._pending[0].future.done():
                self._settle(self._pending.popleft())
            if self._pending:
                with contextlib.suppress(Exception):  # recorded by _settle
                    await self._pending[0].future
                continue
            for state in self._states.values():
                self._detach(state)
            queued = [self._submit(s) for s in self._states.values() if s.queued]
            if queued:
                await asyncio.gather(*queued)
            elif self._tasks:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0)  # submissions in another task's hands

    def _raise_failures(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            more = f" (and {len(failures) - 1} more failed batches)" if len(failures) > 1 else ""
            raise DeliveryError(f"{failures[0]}{more}") from failures[0]


class FeedbackSender:
    """Feedback from one labeller: every record it sends carries its ``source``.

    Made by :meth:`StreamtuneProducer.feedback_from`."""

    def __init__(self, client: StreamtuneProducer, source: str, task: str | None) -> None:
        # Checked now, so a bad source fails where it is named, not at the first label.
        try:
            _SOURCE.validate_python(source)
        except ValidationError as exc:
            raise InvalidMessage("Feedback", f"source: {describe(exc)}", ("source",)) from None
        self.client = client
        self.source = source
        self.task = task

    async def send(
        self, interaction_id: str, *, label: int, task: str | None = None, ts_ms: int | None = None
    ) -> None:
        """Send the true ``label`` of ``interaction_id`` from this source."""
        task = task or self.task
        if task is None:
            raise InvalidMessage("Feedback", "task: missing (give it here or to feedback_from)")
        await self.client.send_feedback(
            interaction_id, task=task, label=label, ts_ms=ts_ms, source=self.source
        )
