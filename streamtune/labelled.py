"""Read labelled examples back from ``labelled`` by offset ranges (the durable training store)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.base import DecodeError
from schemas.messages import LabelledExample, OffsetRange
from streamtune.settings import Settings


@dataclass
class ReadResult:
    """Valid examples of the wanted tasks, deduplicated by interaction_id (the last label wins)."""

    examples: dict[str, LabelledExample] = field(default_factory=dict)
    corrupt: int = 0
    other_tasks: int = 0
    duplicates: int = 0
    missing: int = 0  # offsets in a range that no longer exist (retention, compaction)
    first_error: str | None = None

    def by_task(self, task: str) -> list[LabelledExample]:
        return [e for e in self.examples.values() if e.task == task]


async def read_ranges(
    settings: Settings, topic: str, ranges: list[OffsetRange], tasks: set[str]
) -> ReadResult:
    """Every record in ``ranges`` of ``topic``, validated; bad ones are counted and skipped."""
    result = ReadResult()
    if not ranges:
        return result
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_kwargs(), group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )  # fmt: skip
    await consumer.start()
    try:
        partitions = sorted({r.partition for r in ranges})
        tps = {p: TopicPartition(topic, p) for p in partitions}
        consumer.assign(list(tps.values()))
        ends = await consumer.end_offsets(list(tps.values()))
        for rng in sorted(ranges, key=lambda r: (r.partition, r.start)):
            tp = tps[rng.partition]
            stop = min(rng.end, ends[tp])
            result.missing += rng.end - stop
            consumer.seek(tp, rng.start)
            position = rng.start
            while position < stop:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records = batch.get(tp, [])
                if not records:
                    position = await consumer.position(tp)
                    if position >= stop:
                        break
                    continue
                for record in records:
                    if record.offset >= stop:
                        break
                    _take(result, record.value, tasks)
                position = records[-1].offset + 1
    finally:
        await consumer.stop()
    return result


def _take(result: ReadResult, raw: bytes | None, tasks: set[str]) -> None:
    try:
        example = LabelledExample.from_bytes(raw)
    except DecodeError as exc:
        result.corrupt += 1
        result.first_error = result.first_error or exc.reason
        return
    if example.task not in tasks:
        result.other_tasks += 1
        return
    if example.interaction_id in result.examples:
        result.duplicates += 1
    result.examples[example.interaction_id] = example
