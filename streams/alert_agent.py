"""The alert agent: entity sightings -> surge detection -> ``alerts`` (and the webhook).

It reads ``<app id>-entity-sightings`` (keyed by entity, so each entity's sightings stay in
order on one partition) and keeps one :class:`~streams.alerting.EntityState` per entity in
the ``alerts`` table. Per group of batches:

1. apply each sighting to its entity's detector (a sighting at or below the entity's
   recorded offset was applied before a restart and is skipped);
2. publish the new alerts, and the dead letters, and wait for the broker's acknowledgement;
3. write the changed entity states (and the evictions, as tombstones) to the changelog;
4. offer the acknowledged alerts to the webhook sink, which never waits.

Outputs go out before the state that remembers them. A crash between 2 and 3 replays the
batch and finds the same surges with the same alert ids; the agent read back the ids on
``alerts`` when it started, so it does not publish them twice. Baselines survive a restart
in the table (Faust recovers it from its changelog); alerts read back also restore each
entity's cooldown if the table lost it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import orjson

from schemas.codec import dead_letter
from schemas.messages import Alert, DeadLetter
from streams.alerting import AlertBook, AlertConfig, Surge
from streams.sightings import Sighting
from streams.topology import Topology
from streams.webhook import WebhookSink
from streamtune.core.topic_reader import read_topic

log = logging.getLogger(__name__)

#: Alert ids remembered to drop a replayed repeat; far more than a crash can replay.
SENT_IDS = 10_000


def to_alert(surge: Surge, now_ms: int) -> Alert:
    """The wire message for a surge."""
    sentiment = surge.kind.removesuffix("_surge")
    return Alert(
        alert_id=surge.alert_id,
        kind=surge.kind,
        task=surge.task,
        entity=surge.entity,
        window_start_ts_ms=surge.window_start_ts_ms,
        window_end_ts_ms=surge.window_end_ts_ms,
        count=surge.count,
        share=surge.share,
        baseline_share=surge.baseline_share,
        message=(
            f"{sentiment} surge on {surge.entity}: {surge.share:.0%} of the last {surge.count} "
            f"predictions against a baseline of {surge.baseline_share:.0%} (z={surge.z:.1f})"
        ),
        ts_ms=now_ms,
        window_events=surge.count,
        baseline_events=surge.baseline_events,
        z_score=surge.z,
        examples=list(surge.examples),
        adapter_version=surge.adapter_version,
        trigger_interaction_id=surge.trigger_interaction_id,
    )


class AlertAgent:
    """Runs the surge detector for the entities this worker owns."""

    def __init__(self, topology: Topology, sink: WebhookSink | None = None) -> None:
        self.t = topology
        self.config = AlertConfig.from_settings(topology.settings.alerts)
        self.sink = sink
        self.book: AlertBook | None = None
        self.sent: OrderedDict[str, None] = OrderedDict()
        self.counts = {"alerts_published": 0, "replayed_alerts": 0, "bad_sightings": 0}
        self._sweep_ms = 0

    def forget(self, partitions: set[int]) -> None:
        """Partitions moved away: drop their entities (recovery brings them back)."""
        if self.book is None:
            return
        self.book.forget(partitions)
        store = self.t.alert_table.data
        for entity, value in list(store.items()):
            if isinstance(value, dict) and value.get("partition") in partitions:
                store.pop(entity, None)

    async def process(self, batches: list[tuple[int, list[Any]]]) -> None:
        """Handle batches of ``entity-sightings`` records, each ``(partition, records)``."""
        book = await self._book()
        surges: list[Surge] = []
        dead: list[DeadLetter] = []
        for partition, records in batches:
            for record in records:
                try:
                    sighting = Sighting.parse(record.value)
                except ValueError as exc:
                    self.counts["bad_sightings"] += 1
                    dead.append(self._dead(record, partition, str(exc)))
                    continue
                surges += book.observe(sighting, partition=partition, offset=record.offset)
        self._maybe_evict(book, book.newest_ms)  # clamped: a producer never moves it
        alerts = await self._publish(surges, dead)
        changelog = self.t.alert_table.changelog_topic.get_topic_name()
        for entity, (partition, value) in book.changes().items():
            body = None if value is None else orjson.dumps(value)
            await self.t.app.producer.send(
                changelog, orjson.dumps(entity), body, partition, None, None
            )
        if self.sink is not None:
            for alert, offset in alerts:
                self.sink.offer(alert, offset)

    async def undeliverable(self, alert: Alert, offset: int | None, why: str) -> None:
        """The webhook gave up on ``alert``: dead-letter it (the raw alert, and why)."""
        letter = dead_letter(
            alert.to_bytes(),
            error="webhook_undeliverable",
            reason=f"alert {alert.alert_id} not delivered to the webhook: {why}",
            topic=self.t.alerts,
            partition=0,
            offset=offset or 0,
            key=alert.entity.encode(),
        )
        await self.t.app.producer.send(
            self.t.dead_letter, self.t.alerts.encode(), letter.to_bytes(), None, None, None
        )

    def status(self) -> dict[str, Any]:
        """Counters of the detector, the agent and the webhook, for tests and status."""
        out: dict[str, Any] = dict(self.counts)
        if self.book is not None:
            out.update(self.book.counts, entities=len(self.book.states))
        if self.sink is not None:
            out["webhook"] = dict(self.sink.counts, queued=self.sink.queue.qsize())
        return out

    # --- steps --------------------------------------------------------------------------
    async def _publish(
        self, surges: list[Surge], dead: list[DeadLetter]
    ) -> list[tuple[Alert, int]]:
        producer = self.t.app.producer
        now = int(time.time() * 1000)
        fresh = []
        for surge in surges:
            if surge.alert_id in self.sent:
                self.counts["replayed_alerts"] += 1
                continue
            alert = to_alert(surge, now)
            log.warning("alert %s: %s", alert.alert_id, alert.message)
            future = await producer.send(
                self.t.alerts, alert.entity.encode(), alert.to_bytes(), None, None, None
            )
            fresh.append((alert, future))
        pending = [
            await producer.send(
                self.t.dead_letter, d.source_topic.encode(), d.to_bytes(), None, None, None
            )
            for d in dead
        ]
        results = await asyncio.gather(*(f for _, f in fresh), *pending)
        out = []
        for (alert, _), meta in zip(fresh, results, strict=False):
            self._remember(alert.alert_id)
            out.append((alert, meta.offset))
        self.counts["alerts_published"] += len(out)
        return out

    async def _book(self) -> AlertBook:
        """The detector state; on first use, read back what ``alerts`` already holds."""
        if self.book is not None:
            return self.book
        store = self.t.alert_table.data
        book = AlertBook(self.config, store)
        try:
            records = await read_topic(self.t.settings, self.t.alerts)
        except Exception as exc:  # the table still dedups; a missing read-back must not stop us
            log.warning(
                "alerts: could not read back %s (%s); relying on the table", self.t.alerts, exc
            )
            records = []
        restored = 0
        for record in records:
            try:
                alert = Alert.from_bytes(record.value)
            except Exception:  # noqa: S112 - not ours to judge here; readers dead-letter it
                continue
            self._remember(alert.alert_id)
            stored = store.get(alert.entity)
            if stored is not None:  # an entity this worker owns (recovered from the changelog)
                book.remember_alert(
                    alert.entity, alert.kind, alert.window_end_ts_ms, stored.get("partition", 0)
                )
                restored += 1
        if records:
            log.info("alerts: %d sent before, %d entities recovered", len(records), len(store))
        self.book = book
        return book

    def _remember(self, alert_id: str) -> None:
        self.sent[alert_id] = None
        while len(self.sent) > SENT_IDS:
            self.sent.popitem(last=False)

    def _maybe_evict(self, book: AlertBook, newest_ms: int) -> None:
        """Sweep for quiet entities now and then (a tenth of the eviction age), or when full."""
        due = newest_ms - self._sweep_ms >= self.config.evict_after_ms // 10
        if due or len(book.states) > self.config.max_entities:
            evicted = book.evict(max(newest_ms, self._sweep_ms))
            self._sweep_ms = max(newest_ms, self._sweep_ms)
            if evicted:
                log.info("alerts: evicted %d quiet entities", len(evicted))

    def _dead(self, record: Any, partition: int, why: str) -> DeadLetter:
        return dead_letter(
            record.value,
            error="invalid_event",
            reason=why,
            topic=record.topic,
            partition=partition,
            offset=record.offset,
            key=record.key,
        )
