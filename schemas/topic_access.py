"""Who may read and write each topic: the access table that ``streamtune acls`` applies.

Roles, not principals: settings map each role to a broker principal
(``STREAMTUNE_ACL_<ROLE>_PRINCIPAL``). ``producer`` is whatever feeds the stream (``replay``,
an application); ``worker`` the Faust stream worker; ``serve`` the inference replicas;
``trainer`` the trainer workers and ``streamtune rollback``; ``monitor`` read-only dashboards.

>>> writers_of("model-updates")
('trainer',)
>>> sorted(topic for topic, roles in WRITES.items() if "producer" in roles)
['feedback', 'interactions']
>>> "serve" in READS["model-updates"] and "serve" not in WRITES["model-updates"]
True
>>> sorted(topic for topic, roles in READS.items() if "monitor" not in roles)
[]
"""

from __future__ import annotations

from schemas.topics import (
    ALERTS,
    DEAD_LETTER,
    DRIFT_EVENTS,
    FEEDBACK,
    INTERACTIONS,
    LABELLED,
    MODEL_EVENTS,
    MODEL_UPDATES,
    PREDICTIONS,
    TOPIC_NAMES,
    TRAIN_JOBS,
    TRAIN_STATUS,
)

ROLES: tuple[str, ...] = ("producer", "worker", "serve", "trainer", "monitor")

#: topic -> roles that may write it. Every consumer that validates input may dead-letter.
WRITES: dict[str, tuple[str, ...]] = {
    INTERACTIONS: ("producer",),
    FEEDBACK: ("producer",),
    PREDICTIONS: ("serve",),
    LABELLED: ("worker",),
    DRIFT_EVENTS: ("worker",),
    TRAIN_JOBS: ("worker",),
    TRAIN_STATUS: ("trainer",),
    MODEL_UPDATES: ("trainer",),
    MODEL_EVENTS: ("serve", "trainer"),
    ALERTS: ("worker",),
    DEAD_LETTER: ("worker", "serve", "trainer"),
}

#: topic -> roles that may read it. The monitor reads every topic it folds
#: (``streamtune.monitor.state.MONITORED``): throughput, accuracy and the live adapters.
READS: dict[str, tuple[str, ...]] = {
    INTERACTIONS: ("worker", "serve", "monitor"),
    FEEDBACK: ("worker", "monitor"),
    PREDICTIONS: ("worker", "monitor"),
    LABELLED: ("worker", "trainer", "monitor"),
    DRIFT_EVENTS: ("worker", "monitor"),
    TRAIN_JOBS: ("worker", "trainer", "monitor"),
    TRAIN_STATUS: ("worker", "monitor"),
    MODEL_UPDATES: ("worker", "serve", "trainer", "monitor"),
    MODEL_EVENTS: ("monitor",),
    ALERTS: ("monitor",),
    DEAD_LETTER: ("monitor",),
}

if not set(WRITES) == set(READS) == set(TOPIC_NAMES):
    raise RuntimeError("every topic needs an entry in WRITES and READS")  # caught at import


def writers_of(topic: str) -> tuple[str, ...]:
    """The roles that may write ``topic`` (a base name, without prefix)."""
    return WRITES[topic]
