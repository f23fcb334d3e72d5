"""Memory bounded against hostile traffic (issue 24, item 9), without a broker.

A producer that invents ids or cashtags must not grow a worker or the monitor without
limit. Each table has a cap (a setting); what goes beyond it is counted, and a join entry
pushed out is expired exactly as if it were late: dead-lettered, emitted or counted, never
silently lost. ``tests.faults.memory_probe`` drives the same traffic and reports the RSS.
"""

from __future__ import annotations

import pytest

from schemas import Feedback, Interaction
from streams.join import JoinConfig, JoinPartition
from streamtune.core.settings import Settings
from tests.faults.memory_probe import (
    TASK,
    TS,
    N,
    hostile_alerts,
    hostile_join,
    hostile_monitor,
    join_entries,
)

pytestmark = pytest.mark.faults


def test_join_entries_are_capped_and_the_oldest_expire_as_late():
    """Before: 100k unique ids, answered and never labelled, held 100k entries for an hour."""
    part = hostile_join(Settings(join_max_entries=1_000))
    assert join_entries(part.store) <= 1_000
    assert part.counts["evicted_entries"] == N - 1_000
    # Each one pushed out counted as an expired interaction, as its TTL would have.
    assert part.counts["expired_interactions"] == N - 1_000
    assert part.counts["interactions"] == part.counts["predictions"] == N


def test_entries_pushed_out_by_the_cap_are_expired_as_if_late_and_nothing_is_lost():
    """Feedback pushed out is dead-lettered, a held example is emitted, and feedback for an
    interaction pushed out is still dead-lettered in the end (no marker is left for it)."""
    config = JoinConfig(ttl_ms=3_600_000, prediction_wait_ms=60_000, max_entries=2)
    part = JoinPartition(0, {}, config, clock=lambda: TS + 1_000)

    def interaction(i: str, at: int) -> None:
        msg = Interaction(interaction_id=i, task=TASK, text="$ACME up", ts_ms=TS)
        part.on_interaction(msg, offset=at, ts_ms=TS + at)

    def feedback(i: str, at: int) -> None:
        msg = Feedback(interaction_id=i, task=TASK, label=1, ts_ms=TS)
        part.on_feedback(msg, offset=at, ts_ms=TS + at)

    feedback("f1", 0)  # waits for an interaction that never comes
    interaction("a", 1)
    feedback("a", 2)  # held: waits for its prediction (the earliest deadline)
    for at, i in enumerate("bcd", start=3):
        interaction(i, at)  # each pushes out the oldest: a, then f1, then b
    feedback("b", 6)  # b was pushed out: this waits, as feedback for an unknown id does
    interaction("e", 7)
    interaction("f", 8)
    labelled = part.take_labelled()
    dead = part.take_dead_letters()
    part.changes()
    assert [(e.interaction_id, e.predicted_label) for e in labelled] == [("a", None)]
    assert [(d.error, Feedback.from_bytes(d.raw).interaction_id) for d in dead] == [
        ("join_expired", "f1"),
        ("join_expired", "b"),
    ]
    assert all("2 entries" in d.reason for d in dead), dead[0].reason
    assert join_entries(part.store) == 2
    assert part.counts["evicted_entries"] == 6  # a, f1, b, c, d, then b's feedback
    assert part.counts["expired_feedback"] == 2
    assert part.counts["expired_interactions"] == 3  # b, c and d
    assert part.counts["without_prediction"] == part.counts["labelled"] == 1


def test_join_state_read_back_from_the_changelog_counts_towards_the_cap():
    """A restarted worker recovers its entries from the changelog: they count at once."""
    part = hostile_join(Settings(join_max_entries=1_000), n=1_500)
    again = JoinPartition(0, part.store, JoinConfig(3_600_000, 2_000, max_entries=500))
    again.on_interaction(
        Interaction(interaction_id="new", task=TASK, text="$ACME", ts_ms=TS + 2_000),
        offset=2_000,
        ts_ms=TS + 2_000,
    )
    again.changes()
    assert join_entries(again.store) == 500
    assert again.counts["evicted_entries"] == part.counts["evicted_entries"] + 501


def test_the_monitor_entity_table_is_capped_least_recently_seen_first():
    """Before: every cashtag ever seen kept a row in the monitor (100k cashtags, 100k rows)."""
    state = hostile_monitor(Settings(monitor_max_entities=1_000))
    assert len(state.entity_labels) <= 1_000
    assert state.entities_evicted == N + 1 - 1_000  # 100k cashtags and $AAPL
    # $AAPL, mentioned every 100th record, is never the least recently seen.
    assert "AAPL" in state.entity_labels
    snapshot = state.snapshot()
    assert snapshot["entities_evicted"] == state.entities_evicted
    assert next(iter(snapshot["entities"])) == "AAPL"


def test_the_alert_detector_keeps_at_most_alert_max_entities():
    """The detector's cap (``alert_max_entities``) held before this issue; kept honest here."""
    agent = hostile_alerts(Settings(alert_max_entities=1_000))
    book = agent.book
    assert book is not None
    assert len(book.store) <= 1_000 and len(book.states) <= 1_000
    assert book.counts["evicted"] >= N + 1 - 1_000
    assert "AAPL" in book.store
