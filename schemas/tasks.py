"""The task registry: which tasks exist and which labels each one has.

A task's label set is part of the contract, because a label on the wire is an index
into it.

>>> spec = get_task("tfns-sentiment")
>>> spec.labels
('Bearish', 'Bullish', 'Neutral')
>>> spec.label_index("Bullish")
1
>>> len(get_task("banking77-intent").labels)
77
>>> get_task("weather")
Traceback (most recent call last):
    ...
schemas.errors.UnknownTaskError: unknown task 'weather'; known tasks: banking77-intent, tfns-sentiment
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from schemas.errors import UnknownTaskError


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: its name and its ordered label names."""

    name: str
    labels: tuple[str, ...]
    description: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def label_index(self, name: str) -> int:
        """Index of a label name; raises ``ValueError`` naming the valid labels."""
        try:
            return self.labels.index(name)
        except ValueError:
            raise ValueError(
                f"label {name!r} is not a label of task {self.name!r}; "
                f"valid labels: {', '.join(self.labels)}"
            ) from None


def _packaged_labels(task: str) -> tuple[str, ...]:
    text = resources.files("schemas.task_labels").joinpath(f"{task}.json").read_text("utf-8")
    return tuple(json.loads(text))


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (idempotent for an identical spec)."""
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"task {spec.name!r} is already registered with other labels")
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name``; raises :class:`UnknownTaskError` otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}"
        ) from None


def known_tasks() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


register_task(
    TaskSpec(
        "tfns-sentiment",
        _packaged_labels("tfns-sentiment"),
        "Finance tweet sentiment (Twitter Financial News Sentiment).",
    )
)
register_task(
    TaskSpec(
        "banking77-intent",
        _packaged_labels("banking77-intent"),
        "Online-banking customer intent (BANKING77).",
    )
)
