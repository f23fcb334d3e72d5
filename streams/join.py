"""The feedback join: interactions, predictions and feedback become labelled examples.

One :class:`JoinPartition` owns one partition of the co-partitioned source topics. It keeps
its state in a mapping (the Faust table's store), keyed by ``interaction_id``; the agent
writes the keys listed by :meth:`JoinPartition.changes` to the table's changelog. Nothing
here talks to Kafka, so the rules can be read, and tested, on their own.

Rules:

- An example is emitted once its interaction and its feedback are known. If the prediction
  is not there yet, the example waits up to ``prediction_wait_ms`` (stream time, counted
  from the interaction) so that it can carry the predicted label and adapter version;
  after that it goes out without them (``without_prediction``).
- Feedback may come before its interaction or its prediction; it waits.
- The first feedback wins. A repeat is counted (``duplicate_feedback``); a repeat with
  another label is also dead-lettered (``conflicting_feedback``).
- Unmatched state expires ``ttl_ms`` of stream time after it was created. Feedback that
  expires without its interaction is counted and dead-lettered (``join_expired``). An
  interaction that expires without feedback leaves a small marker for another ``ttl_ms``,
  so that feedback arriving after it is recognised as late: counted and dead-lettered
  (``late_feedback``), never silently dropped.
- Memory is bounded: a partition keeps at most ``max_entries`` entries (waiting, held, and
  the done and expired markers). A producer that floods unique ids pushes out the oldest
  (the earliest deadline, first come first out among equals), each expired at once exactly
  as its TTL would have expired it (held examples go out, feedback is dead-lettered as
  ``join_expired``, an interaction counts as expired), and counted in ``evicted_entries``.
  No marker is left for what the cap pushed out: a repeat or late feedback for it waits
  like feedback for an unknown id, and is dead-lettered when it expires in turn.
- Each interaction gives the input-drift statistic one observation, once its prediction is
  known: the prediction's ``token_count`` (the serving tokenizer's count), or the text's
  whitespace tokens when the prediction carries none. An interaction that goes out or
  expires without a prediction gives the whitespace count then.
- Stream time is the largest record timestamp seen on the partition, each clamped to at
  most ``max_ahead_ms`` past the worker's clock: a producer stamps its records, and one
  record from the far future must not expire every pending entry of the partition. The
  worker's ticks advance it to the wall clock only while the partition has no backlog, so
  that catching up after downtime never expires state that its own backlog would have
  completed.
- A sighting for alerting carries the interaction's ``ts_ms`` clamped to the stream time it
  arrived at (the field is the producer's, and may be up to a day ahead).

>>> from schemas import Feedback, Interaction
>>> j = JoinPartition(0, {}, JoinConfig(ttl_ms=60_000, prediction_wait_ms=0))
>>> TS = 1_700_000_000_000
>>> j.on_feedback(Feedback(interaction_id="a", task="tfns-sentiment", label=1, ts_ms=TS),
...               offset=0, ts_ms=TS)
>>> j.on_interaction(Interaction(interaction_id="a", task="tfns-sentiment", text="up 5%",
...                              ts_ms=TS), offset=0, ts_ms=TS + 5)
>>> [(e.interaction_id, e.label, e.predicted_label) for e in j.take_labelled()]
[('a', 1, None)]
>>> j.counts["labelled"], j.counts["without_prediction"]
(1, 1)
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from schemas import limits
from schemas.codec import dead_letter
from schemas.fields import clamp_ts, now_ms
from schemas.messages import DeadLetter, Feedback, Interaction, LabelledExample, Prediction
from streams.errors import WorkerError
from streams.events import LabelledSeen, Observations, PredictionSeen
from streams.join_state import (
    DONE,
    EXPIRED,
    HELD,
    WAITING,
    FeedbackPart,
    InteractionPart,
    JoinEntry,
    JoinProgress,
    PredictionPart,
    is_progress_key,
    progress_key,
)
from streams.sightings import PredictedText

if TYPE_CHECKING:
    from streamtune.core.layers import JoinSettings

log = logging.getLogger(__name__)

#: Counters kept per partition, in the order ``streamtune worker status`` prints them.
COUNTERS = (
    "interactions",
    "predictions",
    "feedback",
    "labelled",
    "without_prediction",
    "duplicate_feedback",
    "conflicting_feedback",
    "late_feedback",
    "expired_feedback",
    "expired_interactions",
    "expired_predictions",
    "late_predictions",
    "duplicate_interactions",
    "duplicate_predictions",
    "task_conflicts",
    "evicted_entries",
)

__all__ = ["COUNTERS", "JoinConfig", "JoinPartition", "TaskObservations", "progress_key"]


def input_tokens(text: str) -> int:
    """The input statistic when a prediction carries no token count: whitespace tokens.

    >>> input_tokens("$AAPL beats estimates https://t.co/x")
    4
    """
    return len(text.split())


@dataclass(frozen=True)
class JoinConfig:
    """How long unmatched state lives, and how long an example waits for its prediction."""

    ttl_ms: int
    prediction_wait_ms: int
    #: Tasks whose interactions are reported with their predictions (for alerting).
    pair_tasks: frozenset[str] = frozenset()
    #: A record's timestamp moves stream time at most this far past the worker's clock.
    max_ahead_ms: int = limits.MAX_AHEAD_MS
    #: Entries kept per partition; beyond it the oldest expire at once (see the module doc).
    max_entries: int = 100_000

    @classmethod
    def from_settings(
        cls, join: JoinSettings, pair_tasks: frozenset[str] = frozenset()
    ) -> JoinConfig:
        """The join as configured (``STREAMTUNE_JOIN_*``; ``settings.join``), pairing the
        interactions of ``pair_tasks`` with their predictions.

        >>> from streamtune.core.layers import JoinSettings
        >>> JoinConfig.from_settings(JoinSettings(ttl_s=60), frozenset({"t"})).ttl_ms
        60000
        """
        return cls(
            ttl_ms=int(join.ttl_s * 1000),
            prediction_wait_ms=int(join.prediction_wait_s * 1000),
            pair_tasks=pair_tasks,
            max_ahead_ms=int(join.max_ahead_s * 1000),
            max_entries=join.max_entries,
        )


@dataclass
class TaskObservations:
    """What one batch saw of one task, gathered for an :class:`~streams.events.Observations`.

    A ``labelled`` item's offset is known once ``labelled`` acknowledged the record.
    """

    inputs: list[int] = field(default_factory=list)
    predictions: list[PredictionSeen] = field(default_factory=list)
    labelled: list[LabelledSeen] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inputs or self.predictions or self.labelled)

    def to_event(self, task: str) -> Observations:
        return Observations(
            task=task,
            inputs=tuple(self.inputs),
            predictions=tuple(self.predictions),
            labelled=tuple(self.labelled),
        )


class JoinPartition:
    """Join state and rules for one source partition. See the module docstring.

    ``store`` maps interaction_id to :meth:`JoinEntry.to_value` values (and
    :func:`progress_key` to the partition's :class:`JoinProgress` value). ``clock`` is the
    worker's (epoch ms): no record moves stream time past it by more than ``max_ahead_ms``.
    """

    def __init__(
        self,
        partition: int,
        store: MutableMapping[str, Any],
        config: JoinConfig,
        *,
        interactions_topic: str = "interactions",
        predictions_topic: str = "predictions",
        feedback_topic: str = "feedback",
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.partition = partition
        self.clock = clock
        self.store = store
        self.config = config
        self.interactions_topic = interactions_topic
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        progress = JoinProgress.from_value(store.get(progress_key(partition)))
        self.stream_time: int = progress.stream_time_ms
        self.labelled_next: int = progress.labelled_next
        self.counts: dict[str, int] = {name: progress.counts.get(name, 0) for name in COUNTERS}
        self._dirty: dict[str, JoinEntry | None] = {}
        #: ``(deadline, arrival, key)``: the arrival number puts the oldest first among equals.
        self._heap: list[tuple[int, int, str]] = []
        self._arrivals = itertools.count()
        #: Entries of this partition held, in the store and in pending changes.
        self.size = 0
        self._labelled: list[LabelledExample] = []
        self._dead: list[DeadLetter] = []
        self._obs: dict[str, TaskObservations] = {}
        self._paired: list[PredictedText] = []
        for key, value in list(store.items()):
            entry = None if is_progress_key(key) else _read_entry(key, value, partition)
            if entry is not None and entry.partition == partition:
                self._heap.append((entry.deadline_ms, next(self._arrivals), key))
                self.size += 1
        heapq.heapify(self._heap)

    # --- inputs -------------------------------------------------------------------------
    def on_interaction(self, msg: Interaction, *, offset: int, ts_ms: int) -> None:
        """An interaction arrived from ``interactions`` at ``offset`` (record time ``ts_ms``)."""
        self._advance(ts_ms)
        key = msg.interaction_id
        entry = self._get(key)
        if _replayed(entry, entry.interaction_offset if entry else None, offset):
            return
        self.counts["interactions"] += 1
        if entry is None:
            entry = self._new(WAITING)
        elif entry.state in (DONE, EXPIRED) or entry.interaction is not None:
            self.counts["duplicate_interactions"] += 1
            return
        elif self._conflicts(entry, msg, self.interactions_topic, offset):
            return
        entry.interaction = InteractionPart(
            msg.task, msg.text, msg.ts_ms, self.stream_time, entity=msg.entity
        )
        entry.interaction_offset = offset
        if entry.prediction is not None:
            self._pair(key, entry.interaction, entry.prediction)
        if entry.prediction is not None:
            self._observe_input(entry.interaction, entry.prediction)
        if entry.feedback is not None:
            self._complete(key, entry)
        else:
            self._put(key, entry)

    def on_prediction(self, msg: Prediction, *, offset: int, ts_ms: int) -> None:
        """A prediction arrived; it may complete an example that waits for it."""
        self._advance(ts_ms)
        key = msg.interaction_id
        entry = self._get(key)
        if _replayed(entry, entry.prediction_offset if entry else None, offset):
            return
        self.counts["predictions"] += 1
        self._observe(msg.task).predictions.append(
            PredictionSeen(msg.label, round(msg.confidence, 6), msg.adapter_version)
        )
        if entry is None:
            entry = self._new(WAITING)
        elif entry.state in (DONE, EXPIRED):
            self.counts["late_predictions"] += 1
            return
        elif entry.prediction is not None:
            self.counts["duplicate_predictions"] += 1
            return
        elif self._conflicts(entry, msg, self.predictions_topic, offset):
            return
        entry.prediction = PredictionPart(
            msg.task, msg.label, msg.adapter_version, msg.confidence, msg.token_count
        )
        entry.prediction_offset = offset
        if entry.interaction is not None:
            self._pair(key, entry.interaction, entry.prediction)
        if entry.interaction is not None:
            self._observe_input(entry.interaction, entry.prediction)
        if entry.state == HELD:
            self._emit(key, entry)
        else:
            self._put(key, entry)

    def on_feedback(self, msg: Feedback, *, offset: int, ts_ms: int) -> None:
        """Feedback arrived: join it, hold it, or count it as a repeat or as late."""
        self._advance(ts_ms)
        key = msg.interaction_id
        entry = self._get(key)
        if _replayed(entry, entry.feedback_offset if entry else None, offset):
            return
        self.counts["feedback"] += 1
        if entry is None:
            entry = self._new(WAITING)
        elif entry.state == EXPIRED:
            self.counts["late_feedback"] += 1
            self._dead_feedback(msg, offset, "late_feedback", "its interaction had expired")
            return
        elif entry.state in (DONE, HELD) or entry.feedback is not None:
            self._repeat_feedback(entry, msg, offset)
            return
        elif self._conflicts(entry, msg, self.feedback_topic, offset):
            return
        entry.feedback = FeedbackPart(msg.task, msg.label, msg.ts_ms, msg.source or "feedback")
        entry.feedback_offset = offset
        if entry.interaction is not None:
            self._complete(key, entry)
        else:
            self._put(key, entry)

    def tick(self, now_ms: int) -> None:
        """Let stream time follow the wall clock (only call it when there is no backlog)."""
        self._advance(now_ms)

    def recover(self, examples: Iterable[tuple[int, LabelledExample]]) -> None:
        """Take back what ``labelled`` holds past the last recorded position.

        After a crash, ``labelled`` can hold examples whose join state never reached the
        changelog. They are marked done, so that the replayed sources do not emit them
        again, and reported to the windows first, in offset order, so that the windows see
        every partition's offsets in increasing order.
        """
        for offset, example in sorted(examples, key=lambda pair: pair[0]):
            entry = self._new(DONE)
            entry.recovered = True  # repeats of this id are replays of the lost batch
            entry.label = example.label
            self._put(example.interaction_id, entry)
            self._observe(example.task).labelled.append(
                labelled_seen(self.partition, offset, example)
            )
            self.labelled_next = max(self.labelled_next, offset + 1)

    # --- outputs ------------------------------------------------------------------------
    def take_labelled(self) -> list[LabelledExample]:
        """Examples to publish on ``labelled``, in order; call :meth:`confirm` with offsets."""
        out, self._labelled = self._labelled, []
        return out

    def confirm(self, examples: list[LabelledExample], offsets: list[int]) -> None:
        """``labelled`` acknowledged ``examples`` at ``offsets``: report them for windows."""
        for example, offset in zip(examples, offsets, strict=True):
            self._observe(example.task).labelled.append(
                labelled_seen(self.partition, offset, example)
            )
            self.labelled_next = max(self.labelled_next, offset + 1)

    def take_paired(self) -> list[PredictedText]:
        """Interactions of ``pair_tasks`` met by their prediction since the last call."""
        out, self._paired = self._paired, []
        return out

    def take_dead_letters(self) -> list[DeadLetter]:
        out, self._dead = self._dead, []
        return out

    def take_observations(self) -> dict[str, TaskObservations]:
        out, self._obs = {task: obs for task, obs in self._obs.items() if obs}, {}
        return out

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """Changelog values by key (``None`` deletes), the progress record last."""
        changes: dict[str, dict[str, Any] | None] = {}
        dirty, self._dirty = self._dirty, {}
        for key, entry in dirty.items():
            if entry is None:
                self.store.pop(key, None)
                changes[key] = None
            else:
                changes[key] = self.store[key] = entry.to_value()
        progress = JoinProgress(self.stream_time, self.labelled_next, dict(self.counts))
        self.store[progress_key(self.partition)] = progress.to_value()
        changes[progress_key(self.partition)] = progress.to_value()
        return changes

    # --- rules --------------------------------------------------------------------------
    def _complete(self, key: str, entry: JoinEntry) -> None:
        """Interaction and feedback are known: emit, or hold for the prediction."""
        seen_at = entry.interaction.seen_at_ms if entry.interaction else self.stream_time
        if (
            entry.prediction is not None
            or self.stream_time - seen_at >= self.config.prediction_wait_ms
        ):
            self._emit(key, entry)
        else:
            entry.state = HELD
            entry.deadline_ms = seen_at + self.config.prediction_wait_ms
            self._put(key, entry)

    def _pair(self, key: str, interaction: InteractionPart, prediction: PredictionPart) -> None:
        if interaction.task in self.config.pair_tasks:
            self._paired.append(
                PredictedText(
                    interaction_id=key,
                    task=interaction.task,
                    text=interaction.text,
                    entity=interaction.entity,
                    label=prediction.label,
                    confidence=prediction.confidence,
                    adapter_version=prediction.adapter_version,
                    # The producer's field, never later than when it reached the stream.
                    ts_ms=min(interaction.ts_ms, interaction.seen_at_ms),
                )
            )

    def _emit(self, key: str, entry: JoinEntry) -> None:
        interaction, feedback, prediction = entry.interaction, entry.feedback, entry.prediction
        if interaction is None or feedback is None:  # complete and held entries have both
            raise WorkerError(f"join entry {key!r} cannot be emitted: {entry}")
        example = LabelledExample(
            interaction_id=key,
            task=interaction.task,
            text=interaction.text,
            label=feedback.label,
            ts_ms=interaction.ts_ms,
            source=feedback.source,
            predicted_label=prediction.label if prediction else None,
            adapter_version=prediction.adapter_version if prediction else None,
            confidence=prediction.confidence if prediction else None,
        )
        self._labelled.append(example)
        self.counts["labelled"] += 1
        if prediction is None:
            self.counts["without_prediction"] += 1
            self._observe_input(interaction, None)
        done = self._new(DONE)
        done.label = feedback.label
        done.interaction_offset = entry.interaction_offset
        done.prediction_offset = entry.prediction_offset
        done.feedback_offset = entry.feedback_offset
        self._put(key, done)

    def _repeat_feedback(self, entry: JoinEntry, msg: Feedback, offset: int) -> None:
        self.counts["duplicate_feedback"] += 1
        first = entry.feedback.label if entry.feedback is not None else entry.label
        if first is not None and first != msg.label:
            self.counts["conflicting_feedback"] += 1
            self._dead_feedback(
                msg, offset, "conflicting_feedback", f"the first feedback said label {first}"
            )

    def _conflicts(self, entry: JoinEntry, msg: Any, topic: str, offset: int) -> bool:
        """True (and dead-lettered) when ``msg`` names another task than the entry does."""
        known = entry.tasks()
        if not known or known == {msg.task}:
            return False
        self.counts["task_conflicts"] += 1
        self._dead.append(
            dead_letter(
                msg.to_bytes(),
                error="join_conflict",
                reason=f"interaction {msg.interaction_id}: task {msg.task!r} disagrees with "
                f"{', '.join(sorted(known))} seen before for the same interaction_id",
                topic=topic,
                partition=self.partition,
                offset=offset,
                key=msg.interaction_id.encode(),
            )
        )
        return True

    def _dead_feedback(self, msg: Feedback, offset: int, error: str, why: str) -> None:
        self._dead.append(
            dead_letter(
                msg.to_bytes(),
                error=error,
                reason=f"feedback for interaction {msg.interaction_id} not joined: {why}",
                topic=self.feedback_topic,
                partition=self.partition,
                offset=offset,
                key=msg.interaction_id.encode(),
            )
        )

    def _advance(self, ts_ms: int) -> None:
        ts_ms = clamp_ts(ts_ms, self.clock(), self.config.max_ahead_ms)
        if ts_ms > self.stream_time:
            self.stream_time = ts_ms
        heap = self._heap
        while heap and heap[0][0] <= self.stream_time:
            popped = self._pop_oldest()
            if popped is not None:
                self._expire(*popped)

    def _pop_oldest(self) -> tuple[str, JoinEntry] | None:
        """Take the earliest deadline off the heap: its entry, or None when it moved on."""
        deadline, _, key = heapq.heappop(self._heap)
        entry = self._get(key)
        if entry is None or entry.deadline_ms != deadline:
            return None  # the entry moved on since this deadline was set
        return key, entry

    def _bound(self) -> None:
        """Beyond ``max_entries``, the oldest entries expire now, as if late, and are counted.

        Each one leaves nothing behind (no done or expired marker), so that every eviction
        frees a place: a marker would itself be the newest entry.
        """
        while self.size > self.config.max_entries and self._heap:
            popped = self._pop_oldest()
            if popped is None:
                continue
            key, entry = popped
            self.counts["evicted_entries"] += 1
            cap = self.config.max_entries
            evicted = self.counts["evicted_entries"]
            if evicted & (evicted - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...: never a flood
                log.warning(
                    "join: %d entries pushed out by the cap of %d per partition "
                    "(STREAMTUNE_JOIN_MAX_ENTRIES): their feedback is lost as if late",
                    evicted, cap,
                )  # fmt: skip
            self._expire(key, entry, why=f"the partition's join reached its cap of {cap} entries")
            if self._get(key) is not None:
                self._put(key, None)

    def _expire(self, key: str, entry: JoinEntry, why: str | None = None) -> None:
        """Stream time passed the entry's deadline (or the cap pushed it out, ``why``)."""
        if entry.state == HELD:
            self._emit(key, entry)
        elif entry.state in (DONE, EXPIRED):
            self._put(key, None)
        elif entry.feedback is not None:
            self.counts["expired_feedback"] += 1
            part = entry.feedback
            feedback = Feedback(
                interaction_id=key,
                task=part.task,
                label=part.label,
                ts_ms=part.ts_ms,
                source=part.source,
            )
            ttl_s = self.config.ttl_ms / 1000
            self._dead_feedback(
                feedback,
                entry.feedback_offset or 0,
                "join_expired",
                f"no interaction within {ttl_s:g} s"
                if why is None
                else f"no interaction before {why}",
            )
            self._put(key, None)
        elif entry.interaction is not None:
            self.counts["expired_interactions"] += 1
            if entry.prediction is None:
                self._observe_input(entry.interaction, None)
            self._put(key, self._new(EXPIRED))
        else:
            self.counts["expired_predictions"] += 1
            self._put(key, None)

    # --- plumbing -----------------------------------------------------------------------
    def _new(self, state: str) -> JoinEntry:
        return JoinEntry(state, self.partition, self.stream_time + self.config.ttl_ms)

    def _get(self, key: str) -> JoinEntry | None:
        if key in self._dirty:
            return self._dirty[key]
        value = self.store.get(key)
        return None if value is None else _read_entry(key, value, self.partition)

    def _has_entry(self, key: str) -> bool:
        """Whether ``key`` has an entry (a pending change, or the store's value)."""
        if key in self._dirty:
            return self._dirty[key] is not None
        return key in self.store

    def _put(self, key: str, entry: JoinEntry | None) -> None:
        known = self._has_entry(key)
        self._dirty[key] = entry
        if entry is None:
            self.size -= known
            return
        # Stale heap items are skipped when popped (their deadline no longer matches).
        heapq.heappush(self._heap, (entry.deadline_ms, next(self._arrivals), key))
        if not known:
            self.size += 1
            self._bound()  # only a new id grows the partition's state

    def _observe(self, task: str) -> TaskObservations:
        obs = self._obs.get(task)
        if obs is None:
            obs = self._obs[task] = TaskObservations()
        return obs

    def _observe_input(
        self, interaction: InteractionPart, prediction: PredictionPart | None
    ) -> None:
        """One input-drift observation per interaction (see the module docstring)."""
        if prediction is not None and prediction.token_count is not None:
            tokens = prediction.token_count
        else:
            tokens = input_tokens(interaction.text)
        self._observe(interaction.task).inputs.append(tokens)


def _read_entry(key: str, value: Any, partition: int) -> JoinEntry | None:
    """The entry a changelog value holds; ``None`` (and a warning) when it is unreadable.

    Only the worker writes the changelog, so this should not happen; if it does, the id is
    treated as unknown (as if its state had expired) rather than stopping the partition.
    """
    try:
        return JoinEntry.from_value(value)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("join partition %d: unreadable state of %r ignored: %s", partition, key, exc)
        return None


def _replayed(entry: JoinEntry | None, absorbed: int | None, offset: int) -> bool:
    """True when ``entry`` already absorbed the record at ``offset``: a replay after a crash."""
    return entry is not None and (absorbed == offset or entry.recovered)


def labelled_seen(partition: int, offset: int, example: LabelledExample) -> LabelledSeen:
    """What the windows and the drift statistics learn of a published example."""
    confidence = example.confidence
    if confidence is not None and not math.isfinite(confidence):
        confidence = None
    return LabelledSeen(
        partition=partition,
        offset=offset,
        label=example.label,
        predicted=example.predicted_label,
        confidence=confidence,
        ts_ms=example.ts_ms,
    )
