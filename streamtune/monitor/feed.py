"""The monitor's consumer: every streamtune topic, from the start, folded into a MonitorState.

It joins no consumer group (it must not take partitions from the processes it watches) and
commits nothing: on a restart it rebuilds its picture from what the topics hold.
The history is read to the end first and folded in time order, so that feedback never
arrives before the predictions it judges; after that, records are folded as they come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import ConsumerRecord, TopicPartition

from schemas import limits
from schemas.topics import (
    ALERTS,
    DRIFT_EVENTS,
    MODEL_EVENTS,
    MODEL_UPDATES,
    TRAIN_JOBS,
    TRAIN_STATUS,
)
from streams.entities import EntityExtractor
from streamtune.core.clients import make_admin, make_consumer
from streamtune.core.layers import MonitorSettings
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import topic_partitions
from streamtune.monitor.state import MONITORED, MonitorState, wanted

#: Small topics read whole even when the monitor starts from a recent time.
WHOLE_TOPICS = frozenset(
    {MODEL_UPDATES, MODEL_EVENTS, TRAIN_JOBS, TRAIN_STATUS, DRIFT_EVENTS, ALERTS}
)


def new_state(monitor: MonitorSettings) -> MonitorState:
    """An empty picture, as configured (``STREAMTUNE_MONITOR_*``; ``settings.monitor``).

    >>> new_state(MonitorSettings(window=50)).window
    50
    """
    return MonitorState(
        window=monitor.window,
        cbpe_block=monitor.cbpe_block,
        bucket_s=monitor.bucket_s,
        calibration_window=monitor.calibration_window,
        entities=EntityExtractor.from_csv(monitor.entities_file),
        max_ahead_ms=int(monitor.max_ahead_s * 1000),
        max_entities=monitor.max_entities,
    )


class Feed:
    """Follows the monitored topics of ``settings.topic_prefix`` into ``state``.

    With ``since_ms``, the stream topics (interactions, predictions, feedback, labelled,
    dead letters) are read from that time on; the small topics (adapters, jobs, drift,
    alerts) always from their start, so the live adapters and the timeline are whole.
    """

    def __init__(
        self, settings: Settings, state: MonitorState, since_ms: int | None = None
    ) -> None:
        self.settings = settings
        self.state = state
        self.since_ms = since_ms
        self._base = {settings.topic(name): name for name in MONITORED}
        self._tps: list[TopicPartition] = []

    async def start(self) -> None:
        # Clients belong to the running event loop: made here, not in __init__.
        self._consumer = make_consumer(
            self.settings,
            group_id=None,
            max_partition_fetch_bytes=limits.MAX_MODEL_UPDATE_BYTES + 128 * 1024,
        )
        await self._consumer.start()
        await self._assign()

    async def _assign(self) -> None:
        tps: list[TopicPartition] = []
        for topic in self._base:
            tps += await topic_partitions(self._consumer, topic)
        new = [tp for tp in tps if tp not in set(self._tps)]
        if not new:
            return
        # assign() forgets positions: keep those of the partitions already followed.
        positions = {tp: await self._consumer.position(tp) for tp in self._tps}
        self._tps = tps
        self._consumer.assign(tps)
        for tp, position in positions.items():
            self._consumer.seek(tp, position)
        await self._seek_start(new)

    async def _seek_start(self, tps: list[TopicPartition]) -> None:
        """The small topics from their start; the streams from ``since_ms`` when given."""
        since = self.since_ms
        whole = [tp for tp in tps if since is None or self._base[tp.topic] in WHOLE_TOPICS]
        if whole:
            await self._consumer.seek_to_beginning(*whole)
        recent = [tp for tp in tps if tp not in whole]
        if recent and since is not None:
            found = await self._consumer.offsets_for_times({tp: since for tp in recent})
            ends = await self._consumer.end_offsets(recent)
            for tp in recent:
                hit = found.get(tp)
                self._consumer.seek(tp, hit.offset if hit is not None else ends[tp])

    async def stop(self) -> None:
        await self._consumer.stop()

    async def catch_up(self, timeout_s: float = 120.0) -> int:
        """Read what the topics hold now and fold it in timestamp order; the record count."""
        if not self._tps:
            return 0
        ends = await self._consumer.end_offsets(self._tps)
        buffered: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while True:
            positions = [await self._consumer.position(tp) for tp in self._tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, self._tps, strict=True)):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"did not read the topics to their end in {timeout_s:.0f}s")
            for records in (await self._consumer.getmany(timeout_ms=200)).values():
                # Held until folded in time order: only what can change the picture (the
                # adapters' chunks would be the whole of model-updates, every version).
                buffered.extend(r for r in records if wanted(self._base[r.topic], r.key))
        self.fold(buffered)
        return len(buffered)

    async def poll(self, timeout_ms: int = 500) -> list[ConsumerRecord]:
        """Fold what arrived since the last call (new topics are picked up too)."""
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        records = [r for rs in batch.values() for r in rs]
        self.fold(records)
        return records

    def fold(self, records: Iterable[ConsumerRecord]) -> None:
        for r in sorted(records, key=lambda r: (r.timestamp, r.offset)):
            self.state.add(self._base[r.topic], r.key, r.value, r.timestamp)

    async def refresh_topics(self) -> None:
        await self._assign()

    async def lag(self) -> int:
        """Records in the topics that this feed has not folded yet."""
        if not self._tps:
            return 0
        ends = await self._consumer.end_offsets(self._tps)
        return sum([max(0, ends[tp] - await self._consumer.position(tp)) for tp in self._tps])


def worker_group(settings: Settings) -> str:
    """The Faust worker's consumer group (its app id), as ``streams.topology.app_id`` names it."""
    return settings.topic_prefix + settings.worker_app_id


def watched_groups(settings: Settings, listed: Iterable[str]) -> list[str]:
    """streamtune's groups for this prefix: the configured ones and any named with it.

    >>> s = Settings(topic_prefix="demo-")
    >>> watched_groups(s, ["demo-streamtune-worker", "other", "demo-x"])
    ['demo-streamtune-worker', 'demo-x', 'streamtune-serve', 'streamtune-train']
    """
    mine = {settings.serve_group_id, settings.train_group_id, worker_group(settings)}
    if settings.topic_prefix:
        mine |= {g for g in listed if g.startswith(settings.topic_prefix)}
    return sorted(mine)[:32]


async def group_lags(settings: Settings) -> dict[str, int]:
    """Lag per consumer group over this prefix's topics (log end minus committed offset)."""
    admin = make_admin(settings)
    consumer = make_consumer(settings, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        listed = [str(g[0]) for g in await admin.list_consumer_groups()]
        out: dict[str, int] = {}
        for group in watched_groups(settings, listed):
            if group not in listed:
                continue
            committed = await admin.list_consumer_group_offsets(group)
            tps = [
                tp
                for tp, meta in committed.items()
                if tp.topic.startswith(settings.topic_prefix) and meta.offset >= 0
            ]
            if settings.topic_prefix == "":
                names = {settings.topic(n) for n in MONITORED}
                tps = [tp for tp in tps if tp.topic in names]
            if not tps:
                continue
            ends = await consumer.end_offsets(tps)
            out[group] = sum(max(0, ends[tp] - committed[tp].offset) for tp in tps)
        return out
    finally:
        await consumer.stop()
        await admin.close()


def history_start(settings: Settings) -> int | None:
    """Where the monitor starts reading the streams: ``monitor_history_s`` ago (0: the start)."""
    if not settings.monitor_history_s:
        return None
    return int((time.time() - settings.monitor_history_s) * 1000)


async def read_state(
    settings: Settings, *, with_lag: bool = False, since_ms: int | None = None
) -> MonitorState:
    """What the topics of ``settings.topic_prefix`` hold now (the streams from ``since_ms``),
    folded; with the groups' lag if asked."""
    state = new_state(settings.monitor)
    feed = Feed(settings, state, since_ms)
    await feed.start()
    try:
        await feed.catch_up()
    finally:
        await feed.stop()
    if with_lag:
        state.set_lag(await asyncio.wait_for(group_lags(settings), 30), int(time.time() * 1000))
    return state
