"""The join agent: one Faust agent over interactions, predictions, feedback and join ticks.

Each event is a batch of records from one partition (see :mod:`streams.batching`). Per
batch, in this order (the order is what makes a crash safe):

1. decode every record; bad ones become dead letters, good ones go through the join rules;
2. publish the new labelled examples to the *same* partition of ``labelled`` and wait for
   the broker's acknowledgement, which tells their offsets;
3. publish the batch's observations per task (with those offsets) to the task agent, the
   entity sightings to the alert agent (keyed by entity), and the dead letters, and wait
   for the acknowledgements;
4. write the changed join state, then the partition's progress record (which holds the next
   ``labelled`` offset), to the table's changelog.

Faust commits the source offsets only after all of that was flushed. A worker killed in the
middle replays the batch. Examples it had already published sit in ``labelled`` past the
recorded position: the first batch after a restart reads them back, marks them done and
reports them to the windows, so none is published twice and none is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from faust.types import TP

from schemas.codec import dead_letter, decode
from schemas.messages import DeadLetter, Feedback, Interaction, LabelledExample, Prediction
from streams.changelog import ChangelogWriter
from streams.entities import EntityExtractor
from streams.errors import EventError
from streams.events import JoinTick
from streams.join import JoinConfig, JoinPartition
from streams.join_state import partition_of, progress_key
from streams.sightings import Sighting
from streams.topology import Topology
from streamtune.core.topic_reader import read_partition

log = logging.getLogger(__name__)


class JoinAgent:
    """Runs the join for the source partitions this worker owns."""

    def __init__(self, topology: Topology) -> None:
        self.t = topology
        alerts = topology.settings.alerts
        # The alerted task's interactions travel with their predictions, for the alert agent.
        self.config = JoinConfig.from_settings(topology.settings.join, frozenset({alerts.task}))
        self.changelog = ChangelogWriter(topology.app, topology.join_table)
        self.entities = EntityExtractor.from_csv(alerts.entities_file)
        self.parts: dict[int, JoinPartition] = {}
        self.processed: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset
        #: Called with every dead letter the join sends (the worker counts them in /metrics).
        self.on_dead_letter: Callable[[DeadLetter], None] | None = None
        self._models: dict[str, Any] = {
            topology.interactions: (Interaction, "on_interaction"),
            topology.predictions: (Prediction, "on_prediction"),
            topology.feedback: (Feedback, "on_feedback"),
        }

    def forget(self, partitions: set[int]) -> None:
        """The partitions moved away: drop their state (Faust recovers it if they return)."""
        store = self.t.join_table.data
        for key, value in list(store.items()):
            if partition_of(value) in partitions:
                store.pop(key, None)
        for partition in partitions:
            self.parts.pop(partition, None)
            store.pop(progress_key(partition), None)

    async def process(self, batches: list[tuple[str, int, list[Any]]]) -> None:
        """Handle batches of records, each ``(topic, partition, records)``.

        Several batches are handled together so that the broker round trips of steps 2
        and 3 are paid once per group instead of once per batch.
        """
        touched: dict[int, JoinPartition] = {}
        dead: list[DeadLetter] = []
        for topic, partition, records in batches:
            part = touched.get(partition) or await self._partition(partition)
            touched[partition] = part
            if topic == self.t.join_ticks:
                ticks = [self._tick(record, dead) for record in records]
                latest = max((tick.ts_ms for tick in ticks if tick is not None), default=None)
                if latest is not None and await self._caught_up(partition):
                    part.tick(latest)
                continue
            model, handler = self._models[topic]
            apply = getattr(part, handler)
            for record in records:
                message = decode(
                    model,
                    record.value,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                )
                if isinstance(message, DeadLetter):
                    dead.append(message)
                else:
                    apply(message, offset=record.offset, ts_ms=record.timestamp)
            self.processed[(topic, partition)] = records[-1].offset + 1
        await self._publish(list(touched.values()), dead)

    async def _publish(self, parts: list[JoinPartition], dead: list[DeadLetter]) -> None:
        producer = self.t.app.producer
        # Step 2: labelled examples, to the partition they were joined on; wait for offsets.
        sent = []
        for part in parts:
            examples = part.take_labelled()
            futures = [
                await producer.send(
                    self.t.labelled,
                    example.interaction_id.encode(),
                    example.to_bytes(),
                    part.partition,
                    None,
                    None,
                )
                for example in examples
            ]
            sent.append((part, examples, futures))
        for part, examples, futures in sent:
            if examples:
                results = await asyncio.gather(*futures)
                part.confirm(examples, [meta.offset for meta in results])
        # Step 3: observations for the task agent, and dead letters; wait for them too.
        pending = []
        for part in parts:
            for task, obs in part.take_observations().items():
                body = obs.to_event(task).to_bytes()
                pending.append(
                    await producer.send(self.t.task_events, task.encode(), body, None, None, None)
                )
            for seen in part.take_paired():
                for entity in self.entities.extract(seen.text, seen.entity):
                    body = Sighting.of(entity, seen).to_bytes()
                    pending.append(
                        await producer.send(
                            self.t.entity_sightings, entity.encode(), body, None, None, None
                        )
                    )
            dead += part.take_dead_letters()
        for letter in dead:
            if self.on_dead_letter is not None:
                self.on_dead_letter(letter)
            log.warning(
                "dead-lettering %s[%d]@%d: %s",
                letter.source_topic,
                letter.partition,
                letter.offset,
                letter.reason,
            )
            pending.append(
                await producer.send(
                    self.t.dead_letter,
                    letter.source_topic.encode(),
                    letter.to_bytes(),
                    None,
                    None,
                    None,
                )
            )
        await asyncio.gather(*pending)
        # Step 4: join state, then progress, per partition; Faust flushes before it commits.
        for part in parts:
            await self.changelog.write(part.partition, part.changes())

    def _tick(self, record: Any, dead: list[DeadLetter]) -> JoinTick | None:
        """The tick a join-ticks record holds; a bad one is dead-lettered."""
        try:
            return JoinTick.parse(record.value)
        except EventError as exc:
            dead.append(
                dead_letter(
                    record.value or b"",
                    error="invalid_event",
                    reason=str(exc),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                )
            )
            return None

    async def _partition(self, partition: int) -> JoinPartition:
        part = self.parts.get(partition)
        if part is not None:
            return part
        store = self.t.join_table.data
        part = JoinPartition(
            partition,
            store,
            self.config,
            interactions_topic=self.t.interactions,
            predictions_topic=self.t.predictions,
            feedback_topic=self.t.feedback,
        )
        # What a crashed predecessor published after its last recorded position.
        records = await read_partition(
            self.t.settings, self.t.labelled, partition, part.labelled_next
        )
        recovered = []
        for record in records:
            example = decode(
                LabelledExample,
                record.value,
                topic=record.topic,
                partition=partition,
                offset=record.offset,
            )
            if isinstance(example, LabelledExample):
                recovered.append((record.offset, example))
        if recovered:
            log.warning(
                "join partition %d: %d labelled examples past the recorded position were "
                "published before a restart; taking them back",
                partition,
                len(recovered),
            )
        part.recover(recovered)
        self.parts[partition] = part
        if progress_key(partition) not in store:
            log.info("join partition %d starts empty", partition)
        return part

    async def _caught_up(self, partition: int) -> bool:
        """No source backlog on this partition: only then may ticks move stream time."""
        consumer = self.t.app.consumer
        for topic in (self.t.interactions, self.t.predictions, self.t.feedback):
            tp = TP(topic, partition)
            highwater = consumer.highwater(tp)
            if highwater is None:
                return False
            done = self.processed.get((topic, partition))
            if done is None:
                done = await consumer.position(tp)
            if done is None or done < highwater:
                return False
        return True
