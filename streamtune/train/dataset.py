"""A job's data: its examples read back from ``labelled`` by offset ranges (the durable
training store), validated, deduplicated, and assembled into training and holdout sets."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.source_trust import SourceTrust, estimate_trust
from models.training import TaskData
from schemas.base import DecodeError
from schemas.messages import LabelledExample, OffsetRange, TrainJob
from schemas.tasks import get_task
from streamtune.core.errors import StreamtuneError
from streamtune.core.layers import GateSettings
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_ranges as read_offset_ranges


class JobError(StreamtuneError, RuntimeError):
    """A job cannot be trained as it stands (too few valid examples, no holdout, ...)."""


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
    spans = [(r.partition, r.start, r.end) for r in ranges]
    by_partition = await read_offset_ranges(settings, topic, spans)
    for records in by_partition.values():
        for record in records:
            _take(result, record.value, tasks)
    result.missing = sum(r.end - r.start for r in ranges) - sum(
        len(v) for v in by_partition.values()
    )
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


@dataclass
class JobData:
    """What one job trains on and is gated on."""

    datasets: list[TaskData]
    holdouts: dict[str, tuple[list[str], list[int]]]
    summary: str


def labelled_topic(settings: Settings, job: TrainJob) -> str:
    """The job's ``labelled`` topic under this process's prefix."""
    topic = job.labelled_topic
    return topic if topic.startswith(settings.topic_prefix) else settings.topic_prefix + topic


async def job_data(settings: Settings, job: TrainJob) -> JobData:
    """Read and assemble a job's training and holdout sets (newest training examples first,
    up to ``regime_max_examples`` plus the rehearsal sample). Raises :class:`JobError` when a
    task has too little data."""
    tasks = set(job.tasks)
    topic = labelled_topic(settings, job)
    train_read = await read_ranges(settings, topic, job.train_ranges, tasks)
    rehearsal_read = await read_ranges(settings, topic, job.rehearsal_ranges, tasks)
    holdout_read = await read_ranges(settings, topic, job.holdout_ranges, tasks)
    datasets, holdouts = [], {}
    notes: list[str] = []
    for task in job.tasks:
        held = holdout_read.by_task(task)
        fresh = [
            e for e in train_read.by_task(task) if e.interaction_id not in holdout_read.examples
        ]
        fresh = sorted(fresh, key=lambda e: e.ts_ms)[-settings.regime_max_examples :]
        taken = {e.interaction_id for e in fresh} | set(holdout_read.examples)
        older = [e for e in rehearsal_read.by_task(task) if e.interaction_id not in taken]
        examples = fresh + older
        # --- security (issue 12): poisoning defence, see models/source_trust.py ---
        examples, held, verdicts = drop_untrusted_sources(settings.gate, examples, held)
        notes += [f"{task}: {v.describe()}" for v in verdicts if not v.kept]
        # --- end security ---
        if len(examples) < settings.train_min_valid_examples:
            first = f"; first: {train_read.first_error}" if train_read.first_error else ""
            raise JobError(
                f"task {task}: {len(examples)} valid training examples, fewer than "
                f"{settings.train_min_valid_examples} ({train_read.corrupt} corrupt records skipped{first})"
            )
        if not held:
            raise JobError(f"task {task}: the holdout ranges hold no valid example")
        datasets.append(
            TaskData(
                task,
                get_task(task).num_labels,
                [e.text for e in examples],
                [e.label for e in examples],
                fresh=len(fresh),
            )
        )
        holdouts[task] = ([e.text for e in held], [e.label for e in held])
    train_read.corrupt += rehearsal_read.corrupt
    train_read.duplicates += rehearsal_read.duplicates
    summary = (
        f"read {sum(len(d.texts) for d in datasets)} training (with "
        f"{sum(len(rehearsal_read.by_task(t)) for t in job.tasks)} rehearsal) and "
        f"{sum(len(h[0]) for h in holdouts.values())} holdout examples; skipped "
        f"{train_read.corrupt + holdout_read.corrupt} corrupt, {train_read.duplicates} duplicates"
        + "".join(f"; {note}" for note in notes)
    )
    return JobData(datasets, holdouts, summary)


def drop_untrusted_sources(
    gate: GateSettings, train: list[LabelledExample], holdout: list[LabelledExample]
) -> tuple[list[LabelledExample], list[LabelledExample], list[SourceTrust]]:
    """Drop the examples of feedback sources whose labels the other sources and the live
    model contradict too often (``models.source_trust``), from training and holdout alike,
    so a poisoned source neither trains the adapter nor sways the gate.

    >>> drop_untrusted_sources(GateSettings(), [], [])
    ([], [], [])
    """
    verdicts = estimate_trust(
        ((e.source, e.label, e.predicted_label, e.text) for e in (*train, *holdout)),
        min_trust=gate.source_trust_min,
        prior_strength=gate.source_trust_prior,
    )
    dropped = {source for source, verdict in verdicts.items() if not verdict.kept}
    if not dropped:
        return train, holdout, list(verdicts.values())
    return (
        [e for e in train if e.source not in dropped],
        [e for e in holdout if e.source not in dropped],
        list(verdicts.values()),
    )
