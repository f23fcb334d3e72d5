"""Names of everything the worker reads and writes, and its Faust tables, in one place.

The worker's own topics are prefixed with its app id (``<topic_prefix><worker_app_id>``),
like the changelog topics Faust makes for its tables:

- ``<app id>-join-ticks``: clock ticks, one per partition of the joined topics, so that an
  idle partition still expires its join state;
- ``<app id>-task-events``: per-task observations from the join, adapter announcements and
  ticks, keyed by task, read by the task agent;
- ``<app id>-entity-sightings``: live predictions of the alerting task, one record per
  entity named by the text, keyed by entity (the re-key by entity), read by the alert agent;
- ``<app id>-join-changelog``, ``<app id>-tasks-changelog`` and ``<app id>-alerts-changelog``:
  the tables' changelogs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.topics import (
    ALERTS,
    DEAD_LETTER,
    DRIFT_EVENTS,
    FEEDBACK,
    INTERACTIONS,
    LABELLED,
    MODEL_UPDATES,
    PREDICTIONS,
    TRAIN_JOBS,
    TRAIN_STATUS,
    TopicSpec,
)
from streamtune.core.settings import Settings

WEEK_MS = 7 * 24 * 3600 * 1000


def app_id(settings: Settings) -> str:
    """The Faust app id: consumer group, and prefix of the worker's internal topics."""
    return settings.topic_prefix + settings.worker_app_id


def internal_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The worker's own topics (Faust creates the changelogs itself)."""
    base = app_id(settings)
    configs = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS)}
    return [
        TopicSpec(f"{base}-join-ticks", settings.stream_partitions, dict(configs), "join clock"),
        TopicSpec(
            f"{base}-task-events", settings.stream_partitions, dict(configs), "task agent input"
        ),
        TopicSpec(
            f"{base}-entity-sightings",
            settings.stream_partitions,
            dict(configs),
            "alert agent input, keyed by entity",
        ),
    ]


@dataclass
class Topology:
    """Topic names and tables of one worker app."""

    settings: Settings
    app: Any
    join_table: Any = None
    task_table: Any = None
    alert_table: Any = None
    interactions: str = field(init=False)
    predictions: str = field(init=False)
    feedback: str = field(init=False)
    labelled: str = field(init=False)
    drift_events: str = field(init=False)
    train_jobs: str = field(init=False)
    model_updates: str = field(init=False)
    train_status: str = field(init=False)
    dead_letter: str = field(init=False)
    join_ticks: str = field(init=False)
    task_events: str = field(init=False)
    alerts: str = field(init=False)
    entity_sightings: str = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.interactions = s.topic(INTERACTIONS)
        self.predictions = s.topic(PREDICTIONS)
        self.feedback = s.topic(FEEDBACK)
        self.labelled = s.topic(LABELLED)
        self.drift_events = s.topic(DRIFT_EVENTS)
        self.train_jobs = s.topic(TRAIN_JOBS)
        self.model_updates = s.topic(MODEL_UPDATES)
        self.train_status = s.topic(TRAIN_STATUS)
        self.dead_letter = s.topic(DEAD_LETTER)
        ticks, events, sightings = internal_topic_specs(s)
        self.join_ticks = ticks.name
        self.task_events = events.name
        self.alerts = s.topic(ALERTS)
        self.entity_sightings = sightings.name

    def changelog(self, table: str) -> str:
        """The changelog topic Faust keeps for table ``table`` (``join``, ``tasks``, ``alerts``)."""
        return f"{app_id(self.settings)}-{table}-changelog"
