"""A consumer that yields validated messages and routes everything else to dead-letter.

Commit order, written down once and followed by every streamtune consumer:

1. process the batch and send its outputs;
2. send a DeadLetter for every record that failed to decode;
3. wait until the broker acknowledged all of them (fail the commit otherwise);
4. commit the offsets after the batch.

A crash anywhere before step 4 replays the batch: outputs are at-least-once, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from schemas import limits
from schemas.base import Message
from schemas.codec import decode
from schemas.messages import DeadLetter
from schemas.topics import DEAD_LETTER
from streamtune.core.errors import DeliveryError
from streamtune.core.settings import Settings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


@dataclass
class Decoded(Generic[M]):
    """A record that passed validation, with where it came from."""

    message: M
    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int


@dataclass
class Batch(Generic[M]):
    """What one poll returned: good messages, dead letters, and the offsets to commit after."""

    messages: list[Decoded[M]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.messages) + len(self.dead)


class ValidatingConsumer(Generic[M]):
    """Consume ``topics``, decode each record as ``model``, dead-letter the bad ones.

    Use::

        consumer = ValidatingConsumer(settings, Interaction, [settings.topic("interactions")],
                                      group_id="serve", producer=producer)
        await consumer.start()
        batch = await consumer.poll(max_records=64, timeout_ms=50)
        pending = [producer.send(...) for d in batch.messages]   # outputs
        await consumer.commit(batch, outputs=pending)            # dead letters, acks, commit
    """

    def __init__(
        self,
        settings: Settings,
        model: type[M],
        topics: list[str],
        *,
        group_id: str | None,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer | None = None,
        max_bytes: int = limits.MAX_RECORD_BYTES,
    ) -> None:
        from streamtune.core.clients import make_consumer

        self.settings = settings
        self.model = model
        self.producer = producer
        self.max_bytes = max_bytes
        self.dead_letter_topic = settings.topic(DEAD_LETTER)
        self.consumer = consumer or make_consumer(settings, *topics, group_id=group_id)
        self.dead_lettered = 0
        self._grouped = group_id is not None

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def poll(self, max_records: int | None = None, timeout_ms: int = 100) -> Batch[M]:
        """Fetch and decode up to ``max_records`` records. Never raises on bad input."""
        fetched = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        batch: Batch[M] = Batch()
        for tp, records in fetched.items():
            for record in records:
                self._decode_into(batch, record)
            if records:
                batch.next_offsets[tp] = records[-1].offset + 1
        return batch

    def _decode_into(self, batch: Batch[M], record: ConsumerRecord) -> None:
        out = decode(
            self.model,
            record.value,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            max_bytes=self.max_bytes,
        )
        if isinstance(out, DeadLetter):
            log.warning(
                "dead-lettering %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                out.reason,
            )
            batch.dead.append(out)
        else:
            batch.messages.append(
                Decoded(
                    out, record.topic, record.partition, record.offset, record.key, record.timestamp
                )
            )

    async def commit(self, batch: Batch[M], outputs: list[Awaitable[object]] = ()) -> None:  # type: ignore[assignment]
        """Send dead letters, wait for every output's ack, then commit the batch's offsets."""
        pending = list(outputs)
        for dead in batch.dead:
            key = dead.source_topic.encode()
            pending.append(
                await self.producer.send(self.dead_letter_topic, dead.to_bytes(), key=key)
            )
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise DeliveryError(
                f"{len(failures)} of {len(results)} outputs were not acknowledged; not committing "
                f"(first: {failures[0]!r})"
            )
        self.dead_lettered += len(batch.dead)
        await self.commit_offsets(batch.next_offsets)

    async def commit_offsets(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit ``offsets`` for the partitions this consumer still owns; False when a
        rebalance took some or all of them (their new owner processes them again).

        A rebalance is never fatal: aiokafka raises ``IllegalStateError`` for a revoked
        partition and ``CommitFailedError`` while the group rebalances.
        """
        if not offsets:
            return True
        owned = self.consumer.assignment() if self._grouped else set(offsets)
        kept = {tp: OffsetAndMetadata(off, "") for tp, off in offsets.items() if tp in owned}
        if kept:
            try:
                await self.consumer.commit(kept)
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning(
                    "commit failed in a rebalance (records will be processed again): %s", exc
                )
                return False
        if len(kept) < len(offsets):
            lost = sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets if tp not in owned)
            log.warning("not committing revoked partitions %s; their new owner takes them", lost)
            return False
        return True
