"""What the join keeps per interaction_id and per partition: its table values.

The ``join`` table holds one :class:`JoinEntry` per interaction_id that is not done yet (or
done recently enough to recognise repeats), and one :class:`JoinProgress` per partition
under :func:`progress_key`. Both are written to the table's changelog as JSON objects with
named fields (:meth:`JoinEntry.to_value`).

Entries written before this format (one-letter keys, the prediction as a positional list)
are still read, so that a worker upgraded in place recovers its state from the changelog;
they are written back in the new format the next time they change.

>>> entry = JoinEntry(WAITING, partition=0, deadline_ms=60_000)
>>> entry.interaction = InteractionPart("tfns-sentiment", "up 5%", ts_ms=1, seen_at_ms=2)
>>> entry.interaction_offset = 7
>>> value = entry.to_value()
>>> value["state"], value["interaction"]["text"], value["interaction_offset"]
('waiting', 'up 5%', 7)
>>> JoinEntry.from_value(value) == entry
True
>>> old = {"s": "w", "pt": 0, "dl": 60_000, "p": [1, "v3", 0.8, "tfns-sentiment"], "op": 4}
>>> JoinEntry.from_value(old).prediction
PredictionPart(task='tfns-sentiment', label=1, adapter_version='v3', confidence=0.8, token_count=None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Entry states.
WAITING = "waiting"  # some of interaction / prediction / feedback known, not joined yet
HELD = "held"  # interaction and feedback known, waiting for the prediction
DONE = "done"  # emitted; kept until the TTL passes to recognise repeats
EXPIRED = "expired"  # the interaction expired without feedback; kept to recognise late feedback
STATES = (WAITING, HELD, DONE, EXPIRED)
_OLD_STATES = {"w": WAITING, "h": HELD, "d": DONE, "x": EXPIRED}


def progress_key(partition: int) -> str:
    """The table key of a partition's progress record (never a valid interaction_id)."""
    return f"~progress:{partition}"


def is_progress_key(key: str) -> bool:
    return key.startswith("~progress:")


def partition_of(value: Any) -> int | None:
    """The partition a table value's entry belongs to (either format); ``None`` if not one."""
    if not isinstance(value, Mapping):
        return None
    partition = value.get("partition", value.get("pt"))
    return partition if isinstance(partition, int) else None


@dataclass(frozen=True, slots=True)
class InteractionPart:
    """The interaction's part of an entry; ``seen_at_ms`` is the stream time it arrived."""

    task: str
    text: str
    ts_ms: int
    seen_at_ms: int


@dataclass(frozen=True, slots=True)
class PredictionPart:
    """The prediction's part; ``token_count`` is the serving tokenizer's, when it sent one."""

    task: str
    label: int
    adapter_version: str
    confidence: float
    token_count: int | None = None


@dataclass(frozen=True, slots=True)
class FeedbackPart:
    """The first feedback's part; ``source`` is the Feedback's, ``feedback`` if it had none."""

    task: str
    label: int
    ts_ms: int
    source: str


@dataclass(slots=True)
class JoinEntry:
    """The join state of one interaction_id.

    ``deadline_ms`` is the stream time at which it expires (or, when ``held``, stops waiting
    for its prediction). ``*_offset`` are the source offsets it absorbed, so that a replayed
    record is recognised. ``recovered`` marks an entry taken back from ``labelled`` after a
    crash: every source record of its id is a replay. ``label`` is the first feedback's
    label, kept once the entry is done, to tell a conflicting repeat.
    """

    state: str
    partition: int
    deadline_ms: int
    interaction: InteractionPart | None = None
    prediction: PredictionPart | None = None
    feedback: FeedbackPart | None = None
    interaction_offset: int | None = None
    prediction_offset: int | None = None
    feedback_offset: int | None = None
    recovered: bool = False
    label: int | None = None

    def tasks(self) -> set[str]:
        """The tasks its parts name (one, unless a conflict is being checked)."""
        parts = (self.interaction, self.prediction, self.feedback)
        return {part.task for part in parts if part is not None}

    def to_value(self) -> dict[str, Any]:
        """The changelog value: named fields, empty ones left out."""
        value: dict[str, Any] = {
            "state": self.state,
            "partition": self.partition,
            "deadline_ms": self.deadline_ms,
        }
        for name in ("interaction", "prediction", "feedback"):
            part = getattr(self, name)
            if part is not None:
                value[name] = _part_value(part)
        for name in ("interaction_offset", "prediction_offset", "feedback_offset", "label"):
            if getattr(self, name) is not None:
                value[name] = getattr(self, name)
        if self.recovered:
            value["recovered"] = True
        return value

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> JoinEntry:
        """Read a changelog value, in the current format or the one before it.

        Raises ``KeyError``, ``TypeError`` or ``ValueError`` when it is neither.
        """
        if "s" in value:
            return _from_old(value)
        entry = cls(
            state=_state(value["state"]),
            partition=int(value["partition"]),
            deadline_ms=int(value["deadline_ms"]),
            interaction_offset=value.get("interaction_offset"),
            prediction_offset=value.get("prediction_offset"),
            feedback_offset=value.get("feedback_offset"),
            recovered=bool(value.get("recovered", False)),
            label=value.get("label"),
        )
        if "interaction" in value:
            entry.interaction = InteractionPart(**value["interaction"])
        if "prediction" in value:
            entry.prediction = PredictionPart(**value["prediction"])
        if "feedback" in value:
            entry.feedback = FeedbackPart(**value["feedback"])
        return entry


@dataclass(slots=True)
class JoinProgress:
    """Per partition: stream time, the next ``labelled`` offset, and the join's counters.

    Its changelog value keeps the names it always had (``time``, ``labelled_next``,
    ``counts``); ``streamtune worker status`` reads them.
    """

    stream_time_ms: int = 0
    labelled_next: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def to_value(self) -> dict[str, Any]:
        return {
            "time": self.stream_time_ms,
            "labelled_next": self.labelled_next,
            "counts": dict(self.counts),
        }

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | None) -> JoinProgress:
        value = value or {}
        return cls(
            stream_time_ms=value.get("time", 0),
            labelled_next=value.get("labelled_next", 0),
            counts=dict(value.get("counts", {})),
        )


def _part_value(part: Any) -> dict[str, Any]:
    return {name: getattr(part, name) for name in part.__slots__}


def _state(name: Any) -> str:
    if name not in STATES:
        raise ValueError(f"join entry: unknown state {name!r}")
    return name


def _from_old(value: Mapping[str, Any]) -> JoinEntry:
    """The format before named fields: ``s``, ``pt``, ``dl``, ``i``, ``p`` (a list), ``f``..."""
    state = _OLD_STATES.get(value["s"])
    if state is None:
        raise ValueError(f"join entry: unknown state {value['s']!r}")
    entry = JoinEntry(
        state=state,
        partition=int(value["pt"]),
        deadline_ms=int(value["dl"]),
        interaction_offset=value.get("oi"),
        prediction_offset=value.get("op"),
        feedback_offset=value.get("of"),
        recovered="r" in value,
        label=value.get("lab"),
    )
    if "i" in value:
        i = value["i"]
        entry.interaction = InteractionPart(i["task"], i["text"], ts_ms=i["ts"], seen_at_ms=i["at"])
    if value.get("p"):
        label, version, confidence, task = value["p"]
        entry.prediction = PredictionPart(task, label, version, confidence)
    if "f" in value:
        f = value["f"]
        entry.feedback = FeedbackPart(f["task"], f["label"], ts_ms=f["ts"], source=f["src"])
    return entry
