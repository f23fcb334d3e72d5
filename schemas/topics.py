"""Topic names, partition counts, cleanup policies and retention: the one definition.

``interactions``, ``feedback``, ``predictions`` and ``labelled`` are joined on
``interaction_id`` and must stay co-partitioned, so they share one partition count.

>>> specs = {s.name: s for s in topic_specs()}
>>> specs["model-updates"].configs["cleanup.policy"]
'compact'
>>> {specs[n].partitions for n in CO_PARTITIONED}
{3}
>>> topic_specs(prefix="t1-", stream_partitions=6)[0].name, topic_specs(stream_partitions=6)[0].partitions
('t1-interactions', 6)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from schemas import limits

DAY_MS = 24 * 3600 * 1000

INTERACTIONS = "interactions"
FEEDBACK = "feedback"
PREDICTIONS = "predictions"
LABELLED = "labelled"
DRIFT_EVENTS = "drift-events"
TRAIN_JOBS = "train-jobs"
TRAIN_STATUS = "train-status"
MODEL_UPDATES = "model-updates"
MODEL_EVENTS = "model-events"
ALERTS = "alerts"
DEAD_LETTER = "dead-letter"

#: Topics joined on interaction_id: they must have the same partition count.
CO_PARTITIONED = (INTERACTIONS, FEEDBACK, PREDICTIONS, LABELLED)

#: Topics a serve replica reads or writes: it checks they exist before it loads a model.
SERVE_TOPICS = (INTERACTIONS, PREDICTIONS, MODEL_UPDATES)

DEFAULT_STREAM_PARTITIONS = 3


@dataclass(frozen=True)
class TopicSpec:
    """A topic's name (without prefix), partitions and broker-side configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    description: str = ""


def _delete(retention_ms: int, **extra: str) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(retention_ms), **extra}


_BASE: tuple[TopicSpec, ...] = (
    TopicSpec(INTERACTIONS, DEFAULT_STREAM_PARTITIONS, _delete(7 * DAY_MS), "texts to classify"),
    TopicSpec(FEEDBACK, DEFAULT_STREAM_PARTITIONS, _delete(7 * DAY_MS), "true labels"),
    TopicSpec(PREDICTIONS, DEFAULT_STREAM_PARTITIONS, _delete(7 * DAY_MS), "model answers"),
    # The durable store of training data: a train job names offset ranges of it.
    TopicSpec(LABELLED, DEFAULT_STREAM_PARTITIONS, _delete(-1), "joined labelled examples"),
    TopicSpec(DRIFT_EVENTS, 1, _delete(30 * DAY_MS), "drift detections"),
    TopicSpec(TRAIN_JOBS, 1, _delete(30 * DAY_MS), "LoRA update jobs, keyed by task"),
    TopicSpec(TRAIN_STATUS, 1, _delete(30 * DAY_MS), "train job progress and outcomes"),
    # Compacted so a late consumer still finds the live adapter; one partition keeps
    # manifests and their chunks in order.
    TopicSpec(
        MODEL_UPDATES,
        1,
        {
            "cleanup.policy": "compact",
            "max.message.bytes": str(limits.MAX_MODEL_UPDATE_BYTES + 64 * 1024),
            "min.compaction.lag.ms": str(3600 * 1000),
        },
        "signed adapter manifests, keyed by task",
    ),
    TopicSpec(MODEL_EVENTS, 1, _delete(30 * DAY_MS), "adapter published/swapped/rejected events"),
    TopicSpec(ALERTS, 1, _delete(30 * DAY_MS), "financial-sentiment alerts"),
    TopicSpec(DEAD_LETTER, 1, _delete(14 * DAY_MS), "records that failed to parse or validate"),
)

TOPIC_NAMES: tuple[str, ...] = tuple(spec.name for spec in _BASE)


def topic_specs(prefix: str = "", stream_partitions: int | None = None) -> list[TopicSpec]:
    """All topic specs, with an optional name prefix and co-partitioned partition count."""
    out = []
    for spec in _BASE:
        partitions = spec.partitions
        if stream_partitions is not None and spec.name in CO_PARTITIONED:
            partitions = stream_partitions
        out.append(
            replace(
                spec, name=prefix + spec.name, partitions=partitions, configs=dict(spec.configs)
            )
        )
    return out
