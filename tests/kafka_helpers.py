"""Small helpers for integration tests: read a topic to its end, count what is there."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_topic


async def read_all(
    settings: Settings, topic: str, *, expect: int | None = None, timeout_s: float = 20.0
) -> list[ConsumerRecord]:
    """Every record currently in ``topic`` (or wait until ``expect`` records are there)."""
    return await read_topic(settings, topic, expect=expect, timeout_s=timeout_s)


async def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The offsets ``group`` has committed on ``topic``, by partition."""
    from streamtune.core.clients import make_admin

    admin = make_admin(settings)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        await admin.close()


async def send_raw(settings: Settings, topic: str, key: bytes, value: bytes | None) -> None:
    """One record, as written (a tombstone when ``value`` is None), to ``topic`` under
    ``settings``' prefix: what a hostile or careless producer can do."""
    from streamtune.core.clients import make_producer

    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topic), value, key=key)
    finally:
        await producer.stop()
