"""Read a whole topic as it is now: for status commands, benchmarks and tests."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streamtune.settings import Settings


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    expect: int | None = None,
    timeout_s: float = 20.0,
    **consumer_options: Any,
) -> list[ConsumerRecord]:
    """Every record now in ``topic`` (or, with ``expect``, wait until that many are there).

    Raises ``TimeoutError`` if the end of the topic is not reached within ``timeout_s``:
    a partial read must never pass for the whole topic.
    """
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", **consumer_options,
    )  # fmt: skip
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # a topic made just now
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            ends = await consumer.end_offsets(tps)
            caught_up = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            if caught_up and (expect is None or len(out) >= expect):
                return out
            if loop.time() >= deadline:
                if caught_up:
                    return out  # fewer than expected: the caller's assertion says so
                raise TimeoutError(f"did not reach the end of {topic} within {timeout_s:.0f}s")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await consumer.stop()
