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
- Stream time is the largest record timestamp seen on the partition. The worker's ticks
  advance it to the wall clock only while the partition has no backlog, so that catching up
  after downtime never expires state that its own backlog would have completed.

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
import math
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import dead_letter
from schemas.messages import DeadLetter, Feedback, Interaction, LabelledExample, Prediction
from streams.sightings import PredictedText

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
)

# Entry states. Entries are plain dicts so that they serialise to the changelog as JSON.
WAITING = "w"  # some of interaction / prediction / feedback known, not joined yet
HELD = "h"  # interaction and feedback known, waiting for the prediction
DONE = "d"  # emitted; kept until the TTL passes to recognise repeats
EXPIRED = "x"  # the interaction expired without feedback; kept to recognise late feedback


def progress_key(partition: int) -> str:
    """The table key of a partition's progress record (never a valid interaction_id)."""
    return f"~progress:{partition}"


def input_tokens(text: str) -> int:
    """The input statistic the join reports for drift: whitespace-separated tokens.

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


@dataclass
class TaskObservations:
    """What one batch saw of one task, for the drift statistics and the windows.

    ``labelled`` items are ``[partition, offset, label, predicted or None, confidence or
    None, ts_ms]``; the offset is filled in once ``labelled`` acknowledged the record.
    """

    inputs: list[int] = field(default_factory=list)
    predictions: list[list[Any]] = field(default_factory=list)
    labelled: list[list[Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inputs or self.predictions or self.labelled)

    def to_dict(self, task: str) -> dict[str, Any]:
        return {
            "kind": "obs",
            "task": task,
            "inputs": self.inputs,
            "predictions": self.predictions,
            "labelled": self.labelled,
        }


class JoinPartition:
    """Join state and rules for one source partition. See the module docstring."""

    def __init__(
        self,
        partition: int,
        store: MutableMapping[str, Any],
        config: JoinConfig,
        *,
        interactions_topic: str = "interactions",
        predictions_topic: str = "predictions",
        feedback_topic: str = "feedback",
    ) -> None:
        self.partition = partition
        self.store = store
        self.config = config
        self.interactions_topic = interactions_topic
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        progress = store.get(progress_key(partition)) or {}
        self.stream_time: int = progress.get("time", 0)
        self.labelled_next: int = progress.get("labelled_next", 0)
        self.counts: dict[str, int] = {
            name: progress.get("counts", {}).get(name, 0) for name in COUNTERS
        }
        self._dirty: dict[str, dict[str, Any] | None] = {}
        self._heap: list[tuple[int, str]] = []
        self._labelled: list[LabelledExample] = []
        self._dead: list[DeadLetter] = []
        self._obs: dict[str, TaskObservations] = {}
        self._paired: list[PredictedText] = []
        for key, entry in list(store.items()):
            if isinstance(entry, dict) and entry.get("pt") == partition and "dl" in entry:
                self._heap.append((entry["dl"], key))
        heapq.heapify(self._heap)

    # --- inputs -------------------------------------------------------------------------
    def on_interaction(self, msg: Interaction, *, offset: int, ts_ms: int) -> None:
        """An interaction arrived from ``interactions`` at ``offset`` (record time ``ts_ms``)."""
        self._advance(ts_ms)
        key = msg.interaction_id
        entry = self._get(key)
        if _replayed(entry, "oi", offset):
            return
        self.counts["interactions"] += 1
        if entry is None:
            entry = self._new(WAITING, self.stream_time + self.config.ttl_ms)
        elif entry["s"] in (DONE, EXPIRED) or "i" in entry:
            self.counts["duplicate_interactions"] += 1
            return
        elif self._conflicts(entry, msg, self.interactions_topic, offset):
            return
        entry["i"] = {"task": msg.task, "text": msg.text, "ts": msg.ts_ms, "at": self.stream_time}
        if msg.entity:
            entry["i"]["e"] = msg.entity
        entry["oi"] = offset
        if "p" in entry:
            self._pair(key, entry)
        self._observe(msg.task).inputs.append(input_tokens(msg.text))
        if "f" in entry:
            self._complete(key, entry)
        else:
            self._put(key, entry)

    def on_prediction(self, msg: Prediction, *, offset: int, ts_ms: int) -> None:
        """A prediction arrived; it may complete an example that waits for it."""
        self._advance(ts_ms)
        key = msg.interaction_id
        entry = self._get(key)
        if _replayed(entry, "op", offset):
            return
        self.counts["predictions"] += 1
        self._observe(msg.task).predictions.append(
            [msg.label, round(msg.confidence, 6), msg.adapter_version]
        )
        if entry is None:
            entry = self._new(WAITING, self.stream_time + self.config.ttl_ms)
        elif entry["s"] in (DONE, EXPIRED):
            self.counts["late_predictions"] += 1
            return
        elif "p" in entry:
            self.counts["duplicate_predictions"] += 1
            return
        elif self._conflicts(entry, msg, self.predictions_topic, offset):
            return
        entry["p"] = [msg.label, msg.adapter_version, msg.confidence, msg.task]
        entry["op"] = offset
        if "i" in entry:
            self._pair(key, entry)
        if entry["s"] == HELD:
            self._emit(key, entry)
        else:
            self._put(key, entry)

    def on_feedback(self, msg: Feedback, *, offset: int, ts_ms: int) -> None:
        """Feedback arrived: join it, hold it, or count it as a repeat or as late."""
        self._advance(ts_ms)
        key = msg.interaction_id
        entry = self._get(key)
        if _replayed(entry, "of", offset):
            return
        self.counts["feedback"] += 1
        if entry is None:
            entry = self._new(WAITING, self.stream_time + self.config.ttl_ms)
        elif entry["s"] == EXPIRED:
            self.counts["late_feedback"] += 1
            self._dead_feedback(msg, offset, "late_feedback", "its interaction had expired")
            return
        elif entry["s"] in (DONE, HELD) or "f" in entry:
            self._repeat_feedback(entry, msg, offset)
            return
        elif self._conflicts(entry, msg, self.feedback_topic, offset):
            return
        entry["f"] = {
            "task": msg.task,
            "label": msg.label,
            "ts": msg.ts_ms,
            "src": msg.source or "feedback",
        }
        entry["of"] = offset
        if "i" in entry:
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
            entry = self._new(DONE, self.stream_time + self.config.ttl_ms)
            entry["r"] = 1  # repeats of this id are replays of the lost batch
            entry["lab"] = example.label
            self._put(example.interaction_id, entry)
            self._observe(example.task).labelled.append(
                labelled_item(self.partition, offset, example)
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
                labelled_item(self.partition, offset, example)
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
        """Keys to write to the changelog (``None`` deletes), the progress record last."""
        changes, self._dirty = self._dirty, {}
        for key, value in changes.items():
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = value
        progress = {
            "time": self.stream_time,
            "labelled_next": self.labelled_next,
            "counts": dict(self.counts),
        }
        self.store[progress_key(self.partition)] = progress
        changes[progress_key(self.partition)] = progress
        return changes

    # --- rules --------------------------------------------------------------------------
    def _complete(self, key: str, entry: dict[str, Any]) -> None:
        waited = self.stream_time - entry["i"]["at"]
        if "p" in entry or waited >= self.config.prediction_wait_ms:
            self._emit(key, entry)
        else:
            entry["s"] = HELD
            entry["dl"] = entry["i"]["at"] + self.config.prediction_wait_ms
            self._put(key, entry)

    def _pair(self, key: str, entry: dict[str, Any]) -> None:
        interaction, prediction = entry["i"], entry["p"]
        if interaction["task"] in self.config.pair_tasks:
            self._paired.append(
                PredictedText(
                    interaction_id=key,
                    task=interaction["task"],
                    text=interaction["text"],
                    entity=interaction.get("e"),
                    label=prediction[0],
                    confidence=prediction[2],
                    adapter_version=prediction[1],
                    ts_ms=interaction["ts"],
                )
            )

    def _emit(self, key: str, entry: dict[str, Any]) -> None:
        interaction, feedback, prediction = entry["i"], entry["f"], entry.get("p")
        example = LabelledExample(
            interaction_id=key,
            task=interaction["task"],
            text=interaction["text"],
            label=feedback["label"],
            ts_ms=interaction["ts"],
            source=feedback["src"],
            predicted_label=prediction[0] if prediction else None,
            adapter_version=prediction[1] if prediction else None,
            confidence=prediction[2] if prediction else None,
        )
        self._labelled.append(example)
        self.counts["labelled"] += 1
        if prediction is None:
            self.counts["without_prediction"] += 1
        done = self._new(DONE, self.stream_time + self.config.ttl_ms)
        done["lab"] = feedback["label"]
        for name in ("oi", "op", "of"):
            if name in entry:
                done[name] = entry[name]
        self._put(key, done)

    def _repeat_feedback(self, entry: dict[str, Any], msg: Feedback, offset: int) -> None:
        self.counts["duplicate_feedback"] += 1
        first = entry["f"]["label"] if "f" in entry else entry.get("lab")
        if first is not None and first != msg.label:
            self.counts["conflicting_feedback"] += 1
            self._dead_feedback(
                msg, offset, "conflicting_feedback", f"the first feedback said label {first}"
            )

    def _conflicts(self, entry: dict[str, Any], msg: Any, topic: str, offset: int) -> bool:
        """True (and dead-lettered) when ``msg`` names another task than the entry does."""
        known = {part["task"] for part in (entry.get("i"), entry.get("f")) if part}
        if entry.get("p"):
            known.add(entry["p"][3])
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
        if ts_ms > self.stream_time:
            self.stream_time = ts_ms
        heap = self._heap
        while heap and heap[0][0] <= self.stream_time:
            deadline, key = heapq.heappop(heap)
            entry = self._get(key)
            if entry is None or entry.get("dl") != deadline:
                continue  # the entry moved on since this deadline was set
            self._expire(key, entry)

    def _expire(self, key: str, entry: dict[str, Any]) -> None:
        state = entry["s"]
        if state == HELD:
            self._emit(key, entry)
        elif state in (DONE, EXPIRED):
            self._put(key, None)
        elif "f" in entry:
            self.counts["expired_feedback"] += 1
            part = entry["f"]
            feedback = Feedback(
                interaction_id=key,
                task=part["task"],
                label=part["label"],
                ts_ms=part["ts"],
                source=part["src"],
            )
            ttl_s = self.config.ttl_ms / 1000
            self._dead_feedback(
                feedback, entry.get("of", 0), "join_expired", f"no interaction within {ttl_s:g} s"
            )
            self._put(key, None)
        elif "i" in entry:
            self.counts["expired_interactions"] += 1
            self._put(key, self._new(EXPIRED, self.stream_time + self.config.ttl_ms))
        else:
            self.counts["expired_predictions"] += 1
            self._put(key, None)

    # --- plumbing -----------------------------------------------------------------------
    def _new(self, state: str, deadline: int) -> dict[str, Any]:
        return {"s": state, "pt": self.partition, "dl": deadline}

    def _get(self, key: str) -> dict[str, Any] | None:
        if key in self._dirty:
            return self._dirty[key]
        entry = self.store.get(key)
        return dict(entry) if entry is not None else None

    def _put(self, key: str, entry: dict[str, Any] | None) -> None:
        self._dirty[key] = entry
        if entry is not None:
            # Stale heap items are skipped when popped (their deadline no longer matches).
            heapq.heappush(self._heap, (entry["dl"], key))

    def _observe(self, task: str) -> TaskObservations:
        obs = self._obs.get(task)
        if obs is None:
            obs = self._obs[task] = TaskObservations()
        return obs


def _replayed(entry: dict[str, Any] | None, field: str, offset: int) -> bool:
    """True when ``entry`` already absorbed the record at ``offset``: a replay after a crash."""
    return entry is not None and (entry.get(field) == offset or "r" in entry)


def labelled_item(partition: int, offset: int, example: LabelledExample) -> list[Any]:
    confidence = example.confidence
    if confidence is not None and not math.isfinite(confidence):
        confidence = None
    return [
        partition,
        offset,
        example.label,
        example.predicted_label,
        confidence,
        example.ts_ms,
    ]
