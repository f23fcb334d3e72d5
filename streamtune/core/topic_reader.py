"""The one way streamtune reads a topic back outside a consumer group.

- :func:`read_topic`: every record now in a topic (status commands, benchmarks, tests);
- :func:`scan_topic`: the same, batch by batch, for a caller that keeps only what it needs
  (the scans of ``model-updates``, whose adapter chunks stay on the topic for good);
- :func:`read_partition`: a stretch of one partition (the worker's recovery after a handover);
- :func:`read_ranges`: given offset ranges of several partitions (the trainer's examples).

All three use a group-less consumer from :func:`streamtune.core.clients.make_consumer`, so
they never disturb a consumer group's offsets, and none returns a partial read as whole.
All three fetch again from where they are when a read stands still behind its end for
``STALL_S`` seconds (:class:`StallWatch`), and log a warning saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streamtune.core.clients import make_consumer
from streamtune.core.settings import Settings

log = logging.getLogger(__name__)

#: Seconds without progress, while behind the end, before a read refetches from where it is.
STALL_S = 5.0


@dataclass
class StallWatch:
    """When a read that is behind its end has stood still long enough to fetch again.

    >>> watch = StallWatch(stall_s=5.0)
    >>> watch.stalled({0: 10}, behind=True, now=0.0)  # the first look starts the clock
    False
    >>> watch.stalled({0: 10}, behind=True, now=4.9), watch.stalled({0: 10}, behind=True, now=5.0)
    (False, True)
    >>> watch.stalled({0: 10}, behind=True, now=9.0)  # a refetch restarts the clock
    False
    >>> watch.stalled({0: 11}, behind=True, now=20.0)  # it moved
    False
    >>> watch.stalled({0: 11}, behind=False, now=60.0)  # at the end: nothing to fetch
    False
    >>> watch.refetches
    1
    """

    stall_s: float = STALL_S
    refetches: int = 0
    _last: dict[Any, int] | None = field(default=None, repr=False)
    _moved_at: float = field(default=0.0, repr=False)

    def stalled(self, positions: Mapping[Any, int], *, behind: bool, now: float) -> bool:
        """Whether to fetch again now; counts the refetch when it says so."""
        seen = dict(positions)
        if seen != self._last:
            self._last, self._moved_at = seen, now
            return False
        if behind and now - self._moved_at >= self.stall_s:
            self._moved_at, self.refetches = now, self.refetches + 1
            return True
        return False


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, refreshing metadata once for a topic made just now."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        # aiokafka has no public refresh (``_refetch`` below is the other place that reaches for it).
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


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
    out: list[ConsumerRecord] = []
    async for records in scan_topic(
        settings, topic, expect=expect, timeout_s=timeout_s, **consumer_options
    ):
        out.extend(records)
    return out


async def scan_topic(
    settings: Settings,
    topic: str,
    *,
    expect: int | None = None,
    timeout_s: float = 20.0,
    **consumer_options: Any,
) -> AsyncIterator[list[ConsumerRecord]]:
    """The records now in ``topic``, one fetched batch at a time, in offset order per partition.

    Nothing is kept between batches, so a caller that keeps only what it needs reads a
    topic of any size in the memory of a few fetches. Same rules as :func:`read_topic`:
    ``TimeoutError`` rather than a partial read. Close it early with ``aclose()`` (or
    ``contextlib.aclosing``) to stop its consumer at once.
    """
    consumer = make_consumer(settings, group_id=None, **consumer_options)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        watch = StallWatch()
        while True:
            ends = await consumer.end_offsets(tps)
            positions = {tp: await consumer.position(tp) for tp in tps}
            behind = {tp: (positions[tp], ends[tp]) for tp in tps if positions[tp] < ends[tp]}
            if watch.stalled(positions, behind=bool(behind), now=loop.time()):
                await _refetch(consumer, topic, behind)
            if not behind and (expect is None or seen >= expect):
                return
            if loop.time() >= deadline:
                if not behind:
                    return  # fewer than expected: the caller's assertion says so
                where = ", ".join(
                    f"partition {tp.partition} at {at} of {end}, fetched "
                    f"highwater {consumer.highwater(tp)}, stable {consumer.last_stable_offset(tp)}, "
                    f"leader {consumer._client.cluster.leader_for_partition(tp)}"
                    for tp, (at, end) in behind.items()
                )
                raise TimeoutError(
                    f"did not reach the end of {topic} within {timeout_s:.0f}s ({where}; "
                    f"fetched again {watch.refetches} times)"
                )
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen += len(records)
                yield records
    finally:
        await consumer.stop()


async def _refetch(
    consumer: AIOKafkaConsumer,
    topic: str,
    behind: dict[TopicPartition, tuple[int, int]],
) -> None:
    """Fetch again from where a stalled read is. After a broker failover a fetch has been
    seen to stop one record short of the end for a minute; a seek drops the consumer's
    fetch state of that partition, and fresh metadata names the current leader."""
    log.warning(
        "reading %s: no progress for %.0fs at %s; fetching again",
        topic,
        STALL_S,
        ", ".join(f"partition {tp.partition} at {at} of {end}" for tp, (at, end) in behind.items()),
    )
    await consumer._client.force_metadata_update()
    for tp, (at, _) in behind.items():
        consumer.seek(tp, at)


async def read_partition(
    settings: Settings, topic: str, partition: int, start: int, end: int | None = None
) -> list[ConsumerRecord]:
    """Records of ``topic[partition]`` with ``start <= offset < end`` (``end``: the log end)."""
    return (await read_ranges(settings, topic, [(partition, start, end)]))[partition]


async def read_ranges(
    settings: Settings,
    topic: str,
    ranges: Iterable[tuple[int, int, int | None]],
    **consumer_options: Any,
) -> dict[int, list[ConsumerRecord]]:
    """Records of each ``(partition, start, end)`` range, by partition, in offset order.

    ``end`` None means the log end as of now. Offsets that no longer exist (retention,
    compaction) are skipped; the caller counts them from what came back.
    """
    wanted = sorted(ranges, key=lambda r: (r[0], r[1]))
    out: dict[int, list[ConsumerRecord]] = {p: [] for p, _, _ in wanted}
    if not wanted:
        return out
    consumer = make_consumer(settings, group_id=None, **consumer_options)
    await consumer.start()
    try:
        tps = {p: TopicPartition(topic, p) for p in out}
        consumer.assign(list(tps.values()))
        ends = await consumer.end_offsets(list(tps.values()))
        firsts = await consumer.beginning_offsets(list(tps.values()))
        loop = asyncio.get_running_loop()
        for partition, start, end in wanted:
            tp = tps[partition]
            stop = ends[tp] if end is None else min(end, ends[tp])
            start = max(start, firsts[tp])
            if start >= stop:
                continue
            consumer.seek(tp, start)
            watch = StallWatch()
            while (at := await consumer.position(tp)) < stop:
                if watch.stalled({tp: at}, behind=True, now=loop.time()):
                    await _refetch(consumer, topic, {tp: (at, stop)})
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                for record in batch.get(tp, []):
                    if record.offset >= stop:
                        break
                    out[partition].append(record)
        return out
    finally:
        await consumer.stop()
