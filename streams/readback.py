"""Read a stretch of one partition back from Kafka, outside Faust's consumer group.

The worker uses it twice, both times right after it takes over a partition:

- the join reads ``labelled`` past its last recorded position, to learn which examples a
  crashed predecessor already published (see :meth:`streams.join.JoinPartition.recover`);
- the task agent reads its own observation stream back, to rebuild the River detectors
  (see :meth:`streams.drift.DriftMonitor.replay`).
"""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from streamtune.kafka.clients import make_consumer
from streamtune.settings import Settings


async def read_partition(
    settings: Settings, topic: str, partition: int, start: int, end: int | None = None
) -> list[ConsumerRecord]:
    """Records of ``topic[partition]`` with ``start <= offset < end`` (``end``: the log end)."""
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if end is None:
            end = (await consumer.end_offsets([tp]))[tp]
        first = (await consumer.beginning_offsets([tp]))[tp]
        start = max(start, first)
        if start >= end:
            return []
        consumer.seek(tp, start)
        out: list[ConsumerRecord] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    return out
                out.append(record)
        return out
    finally:
        await consumer.stop()
