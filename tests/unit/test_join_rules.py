"""The join rules, without Kafka: ordering, repeats, expiry, replays and recovery."""

from __future__ import annotations

import pytest

from schemas import DeadLetter, Feedback, Interaction, LabelledExample, Prediction
from streams.join import JoinConfig, JoinPartition, progress_key

TS = 1_700_000_000_000
TASK = "tfns-sentiment"


def interaction(i: str, text: str = "$AAPL beats estimates") -> Interaction:
    return Interaction(interaction_id=i, task=TASK, text=text, ts_ms=TS)


def prediction(i: str, label: int = 1) -> Prediction:
    probs = [0.1, 0.1, 0.1]
    probs[label] = 0.8
    return Prediction(
        interaction_id=i, task=TASK, label=label, probs=probs, adapter_version="v7",
        model_id="m", latency_ms=1.0, ts_ms=TS,
    )  # fmt: skip


def feedback(i: str, label: int = 1, task: str = TASK) -> Feedback:
    return Feedback(interaction_id=i, task=task, label=label, ts_ms=TS)


@pytest.fixture
def join() -> JoinPartition:
    return JoinPartition(0, {}, JoinConfig(ttl_ms=10_000, prediction_wait_ms=1_000))


def emitted(join: JoinPartition) -> list[LabelledExample]:
    return join.take_labelled()


def test_in_order_join_carries_the_prediction(join):
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    join.on_prediction(prediction("a", 2), offset=0, ts_ms=TS + 5)
    join.on_feedback(feedback("a", 1), offset=0, ts_ms=TS + 3000)
    [example] = emitted(join)
    assert (example.label, example.predicted_label, example.adapter_version) == (1, 2, "v7")
    assert example.confidence == pytest.approx(0.8)
    assert example.text == "$AAPL beats estimates" and example.ts_ms == TS


def test_feedback_before_interaction_and_prediction_waits_for_both(join):
    join.on_feedback(feedback("a", 0), offset=0, ts_ms=TS)
    assert emitted(join) == []
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS + 10)
    assert emitted(join) == []  # held: the prediction usually follows within milliseconds
    join.on_prediction(prediction("a", 0), offset=0, ts_ms=TS + 20)
    [example] = emitted(join)
    assert (example.label, example.predicted_label) == (0, 0)
    assert join.counts["without_prediction"] == 0


def test_a_held_example_goes_out_without_prediction_when_the_wait_ends(join):
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    join.on_feedback(feedback("a"), offset=0, ts_ms=TS + 10)
    assert emitted(join) == []
    join.tick(TS + 1_000)
    [example] = emitted(join)
    assert example.predicted_label is None
    assert join.counts["without_prediction"] == 1
    join.on_prediction(prediction("a"), offset=0, ts_ms=TS + 1_100)
    assert join.counts["late_predictions"] == 1 and emitted(join) == []


def test_duplicate_feedback_is_counted_and_a_conflicting_one_dead_lettered(join):
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    join.on_prediction(prediction("a"), offset=0, ts_ms=TS)
    join.on_feedback(feedback("a", 1), offset=0, ts_ms=TS)
    join.on_feedback(feedback("a", 1), offset=1, ts_ms=TS)
    join.on_feedback(feedback("a", 2), offset=2, ts_ms=TS)
    assert len(emitted(join)) == 1
    assert join.counts["duplicate_feedback"] == 2
    assert join.counts["conflicting_feedback"] == 1
    [letter] = join.take_dead_letters()
    assert (letter.error, letter.offset) == ("conflicting_feedback", 2)
    assert "first feedback said label 1" in letter.reason


def test_duplicate_feedback_before_the_interaction_keeps_the_first(join):
    join.on_feedback(feedback("a", 1), offset=0, ts_ms=TS)
    join.on_feedback(feedback("a", 1), offset=1, ts_ms=TS)
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    join.on_prediction(prediction("a"), offset=0, ts_ms=TS)
    assert [e.label for e in emitted(join)] == [1]
    assert join.counts["duplicate_feedback"] == 1


def test_unmatched_feedback_expires_into_dead_letter(join):
    join.on_feedback(feedback("lonely"), offset=4, ts_ms=TS)
    join.on_interaction(interaction("other"), offset=0, ts_ms=TS + 10_000)  # stream time moves
    [letter] = join.take_dead_letters()
    assert isinstance(letter, DeadLetter)
    assert (letter.error, letter.source_topic, letter.offset) == ("join_expired", "feedback", 4)
    assert Feedback.from_bytes(letter.raw).interaction_id == "lonely"
    assert join.counts["expired_feedback"] == 1


def test_feedback_after_its_interaction_expired_is_late(join):
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    join.tick(TS + 10_000)
    assert join.counts["expired_interactions"] == 1
    join.on_feedback(feedback("a"), offset=9, ts_ms=TS + 12_000)
    [letter] = join.take_dead_letters()
    assert (letter.error, letter.offset) == ("late_feedback", 9)
    assert join.counts["late_feedback"] == 1 and emitted(join) == []


def test_state_is_bounded_by_the_ttl(join):
    for i in range(50):
        join.on_interaction(interaction(f"i{i}"), offset=i, ts_ms=TS)
    join.changes()
    join.tick(TS + 20_000)  # expiry, then the markers' own expiry
    join.tick(TS + 40_000)
    join.changes()
    assert [key for key in join.store if not key.startswith("~")] == []


def test_a_task_mismatch_is_dead_lettered(join):
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    join.on_feedback(feedback("a", task="banking77-intent"), offset=3, ts_ms=TS)
    [letter] = join.take_dead_letters()
    assert letter.error == "join_conflict" and "disagrees" in letter.reason


def test_replayed_records_change_nothing(join):
    join.on_interaction(interaction("a"), offset=7, ts_ms=TS)
    join.on_prediction(prediction("a"), offset=3, ts_ms=TS)
    join.on_feedback(feedback("a"), offset=5, ts_ms=TS)
    assert len(emitted(join)) == 1
    counts = dict(join.counts)
    for _ in range(2):  # the same records again, as after a crash before the commit
        join.on_interaction(interaction("a"), offset=7, ts_ms=TS)
        join.on_prediction(prediction("a"), offset=3, ts_ms=TS)
        join.on_feedback(feedback("a"), offset=5, ts_ms=TS)
    assert emitted(join) == [] and join.counts == counts


def test_state_and_progress_survive_a_new_partition_object():
    store: dict = {}
    config = JoinConfig(ttl_ms=10_000, prediction_wait_ms=0)
    first = JoinPartition(1, store, config)
    first.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    first.on_feedback(feedback("b"), offset=0, ts_ms=TS)
    changes = first.changes()
    assert progress_key(1) in changes and changes[progress_key(1)]["time"] == TS
    second = JoinPartition(1, store, config)  # a restarted worker, state from the changelog
    second.on_feedback(feedback("a"), offset=1, ts_ms=TS + 1)
    second.on_interaction(interaction("b"), offset=1, ts_ms=TS + 1)
    assert sorted(e.interaction_id for e in second.take_labelled()) == ["a", "b"]
    assert second.stream_time == TS + 1


def test_recovery_takes_back_published_examples_in_offset_order(join):
    published = [
        (12, LabelledExample(interaction_id="b", task=TASK, text="t", label=0, ts_ms=TS, source="feedback")),
        (11, LabelledExample(interaction_id="a", task=TASK, text="t", label=2, ts_ms=TS, source="feedback")),
    ]  # fmt: skip
    join.on_interaction(interaction("a"), offset=0, ts_ms=TS)
    join.recover(published)
    assert join.labelled_next == 13
    obs = join.take_observations()[TASK]
    assert [item.offset for item in obs.labelled] == [11, 12]
    # The replayed feedback that produced them emits nothing more.
    join.on_feedback(feedback("a", 2), offset=3, ts_ms=TS)
    join.on_feedback(feedback("b", 0), offset=4, ts_ms=TS)
    assert emitted(join) == [] and join.counts["duplicate_feedback"] == 0
