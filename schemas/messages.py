"""One typed model per message on the wire.

Every model validates on the way in and serialises with orjson:

>>> itx = Interaction(interaction_id="tfns-1", task="tfns-sentiment",
...                   text="$AAPL beats estimates", ts_ms=1_700_000_000_000)
>>> Interaction.from_bytes(itx.to_bytes()) == itx
True
>>> Feedback.from_bytes(b'{"interaction_id": "tfns-1", "task": "tfns-sentiment", '
...                     b'"label": 7, "ts_ms": 1700000000000}')
Traceback (most recent call last):
    ...
schemas.base.DecodeError: invalid Feedback: label: label 7 is out of range for task 'tfns-sentiment' (0..2)
"""

from __future__ import annotations

import base64
import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from schemas import limits
from schemas.base import Message
from schemas.fields import Entity, Id, LabelIndex, Sha256Hex, ShortStr, TaskName, Text, TimestampMs
from schemas.tasks import get_task

MetricMap = Annotated[dict[str, float], Field(max_length=limits.MAX_METRICS)]


def _check_label(task: str, label: int | None, field: str = "label") -> None:
    if label is None:
        return
    n = get_task(task).num_labels
    if label >= n:
        raise ValueError(f"{field}: label {label} is out of range for task {task!r} (0..{n - 1})")


class Interaction(Message):
    """A text to classify, published by an event producer. Key: ``interaction_id``."""

    interaction_id: Id
    task: TaskName
    text: Text
    ts_ms: TimestampMs
    entity: Entity | None = Field(default=None, description="e.g. a ticker such as $AAPL")
    source: ShortStr | None = None


class Feedback(Message):
    """The true label of an interaction, published later. Key: ``interaction_id``."""

    interaction_id: Id
    task: TaskName
    label: LabelIndex
    ts_ms: TimestampMs
    source: ShortStr | None = None

    @model_validator(mode="after")
    def _label_in_range(self) -> Feedback:
        _check_label(self.task, self.label)
        return self


class Prediction(Message):
    """An inference consumer's answer. Key: ``interaction_id``. Names the adapter that made it."""

    interaction_id: Id
    task: TaskName
    label: LabelIndex
    probs: list[float] = Field(max_length=limits.MAX_LABELS)
    adapter_version: Id = Field(description="'base' when no adapter is loaded")
    model_id: ShortStr
    latency_ms: float = Field(
        ge=0.0,
        le=limits.MAX_LATENCY_MS,
        description=(
            "from the interaction's record timestamp to the answer; capped at "
            "MAX_LATENCY_MS (a week) for records older than that"
        ),
    )
    ts_ms: TimestampMs
    token_count: int | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="the serving tokenizer's token count; the worker's input-drift statistic",
    )
    embedding_sketch: list[float] | None = Field(
        default=None,
        max_length=64,
        description="deprecated and unused: accepted for compatibility, no longer sent or read",
    )

    @model_validator(mode="after")
    def _probs_match_task(self) -> Prediction:
        _check_label(self.task, self.label)
        n = get_task(self.task).num_labels
        if len(self.probs) != n:
            raise ValueError(
                f"probs: has {len(self.probs)} entries; task {self.task!r} has {n} labels"
            )
        if any(not (0.0 <= p <= 1.0) for p in self.probs):
            raise ValueError("probs: every probability must lie in [0, 1]")
        if abs(sum(self.probs) - 1.0) > 1e-3:
            raise ValueError(f"probs: sum to {sum(self.probs):.4f}, not 1")
        return self

    @property
    def confidence(self) -> float:
        return max(self.probs)


class LabelledExample(Message):
    """A joined, labelled example on ``labelled``: the durable store of training data."""

    interaction_id: Id
    task: TaskName
    text: Text
    label: LabelIndex
    ts_ms: TimestampMs
    source: ShortStr = Field(description="where the label came from, e.g. 'feedback' or 'seed'")
    predicted_label: LabelIndex | None = None
    adapter_version: Id | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _labels_in_range(self) -> LabelledExample:
        _check_label(self.task, self.label)
        _check_label(self.task, self.predicted_label, "predicted_label")
        return self


class DriftEvent(Message):
    """A detector fired. Key: task."""

    event_id: Id
    task: TaskName
    detector: ShortStr
    statistic: ShortStr
    value: float
    position: int = Field(ge=0, description="stream position (events seen for this task)")
    examples_since_change: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="labelled examples after the estimated change point (statistics of "
        "labelled examples only); the new regime starts there",
    )
    adapter_version: Id | None = None
    ts_ms: TimestampMs

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("value must be finite")
        return value


class OffsetRange(Message):
    """Offsets ``[start, end)`` of one partition of a topic."""

    partition: int = Field(ge=0, le=100_000)
    start: int = Field(ge=0)
    end: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> OffsetRange:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be greater than start {self.start}")
        return self

    def overlaps(self, other: OffsetRange) -> bool:
        return (
            self.partition == other.partition and self.start < other.end and other.start < self.end
        )


Ranges = Annotated[list[OffsetRange], Field(max_length=limits.MAX_OFFSET_RANGES)]


class TrainJob(Message):
    """Train an adapter on ranges of ``labelled``. Key: the task (or ``+``-joined tasks).

    A range ``[start, end)`` of one ``labelled`` partition can also hold examples of other
    tasks: readers keep the examples of ``tasks`` and deduplicate by ``interaction_id``.
    """

    job_id: Id
    tasks: list[TaskName] = Field(min_length=1, max_length=8)
    reason: Literal["drift", "window", "schedule", "manual"]
    labelled_topic: ShortStr
    train_ranges: Ranges = Field(min_length=1)
    rehearsal_ranges: Ranges = Field(default_factory=list)
    holdout_ranges: Ranges = Field(min_length=1)
    parent_version: Id | None = None
    created_ts_ms: TimestampMs
    train_examples: int | None = Field(
        default=None, ge=0, description="examples of the job's tasks in train_ranges"
    )
    holdout_examples: int | None = Field(
        default=None, ge=0, description="examples of the job's tasks in holdout_ranges"
    )
    drift_event_id: Id | None = Field(
        default=None, description="the drift event that triggered the job, if one did"
    )

    @model_validator(mode="after")
    def _holdout_disjoint(self) -> TrainJob:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("tasks: must not repeat a task")
        for held in self.holdout_ranges:
            for train in (*self.train_ranges, *self.rehearsal_ranges):
                if held.overlaps(train):
                    raise ValueError(
                        f"holdout_ranges: partition {held.partition} [{held.start}, {held.end}) "
                        f"overlaps training range [{train.start}, {train.end})"
                    )
        return self

    @property
    def key(self) -> str:
        return "+".join(self.tasks)


#: The version every prediction names before any adapter is live: the task's seed model
#: (the base encoder with its seed head). A rollback to it is a signed manifest with
#: ``revert_to_base`` (never a tombstone, which consumers ignore).
SEED_VERSION = "base"


class AdapterManifest(Message):
    """A signed adapter announcement on ``model-updates`` (compacted). Key: task.

    The adapter itself is a safetensors file plus a JSON config; it travels inline
    (``payload_b64``) when small, or in ``chunks`` separate records otherwise. A manifest
    with ``revert_to_base`` carries no adapter: signed like any other, it returns the task
    to its seed model (``streamtune rollback TASK --to base``).
    """

    task: TaskName
    version: Id
    parent_version: Id | None = None
    base_model_id: ShortStr
    num_labels: int = Field(ge=1, le=limits.MAX_LABELS)
    sha256: Sha256Hex
    size_bytes: int = Field(ge=0, le=1 << 30, description="0 only in a revert_to_base manifest")
    metrics: MetricMap = Field(default_factory=dict)
    created_ts_ms: TimestampMs
    key_id: ShortStr
    signature_b64: str = Field(min_length=1, max_length=256)
    transfer: Literal["inline", "chunked"]
    chunks: int = Field(default=1, ge=1, le=4096)
    payload_b64: str | None = Field(default=None, max_length=2 * limits.MAX_MODEL_UPDATE_BYTES)
    library_versions: dict[str, ShortStr] = Field(default_factory=dict, max_length=16)
    job_id: Id | None = Field(
        default=None, description="the train job that produced it; absent for manual publishes"
    )
    sequence: int = Field(
        default=0,
        ge=0,
        le=(1 << 62),
        description=(
            "signed, strictly increasing per task: consumers reject a live manifest older than "
            "the one they serve, so replaying an old one cannot roll back; absent (0) in "
            "manifests signed before the field existed"
        ),
    )

    revert_to_base: bool = Field(
        default=False,
        description=(
            "signed: the task returns to its seed model. Such a manifest has version 'base' and "
            "no payload (size_bytes 0, an empty inline payload); absent (false) in adapters, "
            "so manifests signed before the field existed still verify"
        ),
    )

    @model_validator(mode="after")
    def _transfer_consistent(self) -> AdapterManifest:
        _check_label(self.task, self.num_labels - 1, "num_labels")
        if self.revert_to_base:
            if self.version != SEED_VERSION or self.size_bytes != 0 or self.payload_b64 != "":
                raise ValueError(
                    f"revert_to_base: needs version {SEED_VERSION!r}, size_bytes 0 and an "
                    "empty inline payload"
                )
        elif self.version == SEED_VERSION:
            raise ValueError(f"version: {SEED_VERSION!r} names the seed model, not an adapter")
        elif self.size_bytes == 0:
            raise ValueError("size_bytes: an adapter has at least one byte")
        if self.transfer == "inline" and self.payload_b64 is None:
            raise ValueError("payload_b64: required when transfer is 'inline'")
        if self.transfer == "chunked" and self.payload_b64 is not None:
            raise ValueError("payload_b64: must be absent when transfer is 'chunked'")
        return self


class AdapterChunk(Message):
    """One piece of an adapter too large for one record. Key: ``task@version#index``."""

    task: TaskName
    version: Id
    index: int = Field(ge=0, lt=4096)
    chunks: int = Field(ge=1, le=4096)
    data_b64: str = Field(min_length=1, max_length=2 * limits.MAX_MODEL_UPDATE_BYTES)

    @field_validator("data_b64")
    @classmethod
    def _strict_base64(cls, value: str) -> str:
        # Strict, so a consumer that decodes a validated chunk never meets a surprise.
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("not valid base64") from None
        return value

    @model_validator(mode="after")
    def _index_in_range(self) -> AdapterChunk:
        if self.index >= self.chunks:
            raise ValueError(f"index: {self.index} is not below chunks {self.chunks}")
        return self

    @property
    def data(self) -> bytes:
        """The chunk's bytes (``data_b64`` was checked strictly on the way in).

        >>> AdapterChunk(task="tfns-sentiment", version="v1", index=0, chunks=1,
        ...              data_b64="AAEC").data
        b'\\x00\\x01\\x02'
        """
        return base64.b64decode(self.data_b64, validate=True)


class AdapterEvent(Message):
    """What happened to an adapter: published, loaded, swapped in, rejected, rolled back."""

    task: TaskName
    version: Id
    kind: Literal["published", "swapped", "rejected", "rolled_back"]
    source: ShortStr = Field(description="the process that reports it, e.g. serve-host-1234")
    error: ShortStr | None = Field(default=None, description="rejection code, e.g. bad_signature")
    reason: str | None = Field(default=None, max_length=2048)
    ts_ms: TimestampMs


class JobStatus(Message):
    """Progress and outcome of a train job, on ``train-status``. Key: the job's task key.

    ``started`` and ``progress`` may repeat (one per attempt); a job ends with exactly one
    of ``finished`` (at least one adapter promoted), ``rejected`` (the gate said no),
    ``superseded`` (a newer drift made its data stale; whatever it promoted before that stays)
    or ``failed`` (every attempt failed; the live model is untouched).
    """

    job_id: Id
    tasks: list[TaskName] = Field(min_length=1, max_length=8)
    state: Literal["started", "progress", "finished", "rejected", "superseded", "failed"]
    attempt: int = Field(ge=1, le=100)
    progress: float | None = Field(default=None, ge=0.0, le=1.0)
    message: str | None = Field(default=None, max_length=2048)
    metrics: MetricMap = Field(default_factory=dict)
    adapter_versions: dict[str, Id] = Field(default_factory=dict, max_length=8)
    source: ShortStr
    ts_ms: TimestampMs


class Alert(Message):
    """A financial-sentiment alert, e.g. a surge of bearish news about one ticker. Key: entity."""

    alert_id: Id
    kind: ShortStr
    task: TaskName
    entity: Entity
    window_start_ts_ms: TimestampMs
    window_end_ts_ms: TimestampMs
    count: int = Field(ge=0)
    share: float = Field(ge=0.0, le=1.0)
    baseline_share: float = Field(ge=0.0, le=1.0)
    message: str = Field(min_length=1, max_length=512)
    ts_ms: TimestampMs
    # Added without a version bump: optional, so older readers ignore them.
    window_events: int | None = Field(
        default=None, ge=0, description="sightings in the sliding window that fired"
    )
    baseline_events: float | None = Field(
        default=None, ge=0.0, description="weight of the entity's baseline when it fired"
    )
    z_score: float | None = Field(default=None, description="the surge test's statistic")
    examples: list[Text] = Field(
        default_factory=list, max_length=3, description="up to 3 texts of the surge, newest first"
    )
    adapter_version: Id | None = Field(
        default=None, description="the adapter that made the newest prediction in the window"
    )
    trigger_interaction_id: Id | None = Field(
        default=None, description="the interaction whose prediction fired the alert"
    )


class DeadLetter(Message):
    """A record that could not be parsed or validated, with why and where it came from."""

    source_topic: ShortStr
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    error: ShortStr = Field(description="short code, e.g. invalid_json, too_large, unknown_task")
    reason: str = Field(min_length=1, max_length=4096)
    raw_b64: str = Field(description="the raw value, base64; truncated past raw_size limits")
    raw_size: int = Field(ge=0)
    raw_truncated: bool = False
    key_b64: str | None = None
    ts_ms: TimestampMs

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.raw_b64)


#: Every message type, by name, for schema export and tests.
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        Interaction,
        Feedback,
        Prediction,
        LabelledExample,
        DriftEvent,
        TrainJob,
        AdapterManifest,
        AdapterChunk,
        AdapterEvent,
        JobStatus,
        Alert,
        DeadLetter,
    )
}
