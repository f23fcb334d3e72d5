"""The worker's typed events and join state: round trips, the formats written before them,
and the records they refuse (which the agents dead-letter)."""

from __future__ import annotations

import orjson
import pytest

from schemas import Feedback, Interaction, Prediction
from streams.errors import EventError
from streams.events import (
    AdapterPublished,
    JobEnded,
    JoinTick,
    LabelledSeen,
    Observations,
    PredictionSeen,
    TaskTick,
    parse_task_event,
)
from streams.join import JoinConfig, JoinPartition
from streams.join_state import (
    DONE,
    HELD,
    FeedbackPart,
    InteractionPart,
    JoinEntry,
    PredictionPart,
    progress_key,
)
from streams.task_agent import tick_events

TASK = "tfns-sentiment"
TS = 1_700_000_000_000

EVENTS = [
    Observations(
        task=TASK,
        inputs=(3, 17),
        predictions=(PredictionSeen(2, 0.75, "v1"), PredictionSeen(0, 1.0, "base")),
        labelled=(
            LabelledSeen(partition=1, offset=40, label=2, predicted=2, confidence=0.75, ts_ms=TS),
            LabelledSeen(
                partition=1, offset=41, label=0, predicted=None, confidence=None, ts_ms=TS
            ),
        ),
    ),
    Observations(task="banking77-intent"),
    AdapterPublished(task=TASK, version="v2", job_id="job-1", created_ms=TS),
    AdapterPublished(task=TASK, version="v3", job_id=None, created_ms=TS),
    JobEnded(task=TASK, job_id="job-1", state="rejected"),
    TaskTick(task=TASK),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_task_events_round_trip_as_readable_json(event):
    raw = event.to_bytes()
    data = orjson.loads(raw)
    assert data["kind"] == event.kind and data["task"] == event.task
    assert parse_task_event(raw) == event
    assert type(event).parse(raw) == event


def test_observations_name_every_field_on_the_wire():
    data = orjson.loads(EVENTS[0].to_bytes())
    assert data["predictions"][0] == {"label": 2, "confidence": 0.75, "adapter_version": "v1"}
    assert data["labelled"][1] == {
        "partition": 1, "offset": 41, "label": 0, "predicted": None, "confidence": None, "ts_ms": TS,
    }  # fmt: skip


def test_join_tick_round_trips_and_reads_the_old_tick():
    assert JoinTick.parse(JoinTick(ts_ms=TS).to_bytes()) == JoinTick(ts_ms=TS)
    assert JoinTick.parse(orjson.dumps({"ts": TS})) == JoinTick(ts_ms=TS)


def test_task_ticks_are_typed_events():
    for key, value in tick_events():
        assert parse_task_event(value) == TaskTick(key.decode())


def test_observations_written_as_positional_lists_are_still_read():
    """A restarted worker replays task-events written before the events had named fields."""
    old = {
        "kind": "obs",
        "task": TASK,
        "inputs": [4],
        "predictions": [[1, 0.8, "v7"]],
        "labelled": [[0, 12, 1, 1, 0.8, TS], [0, 13, 2, None, None, TS]],
    }
    event = Observations.parse(orjson.dumps(old))
    assert event.predictions == (PredictionSeen(label=1, confidence=0.8, adapter_version="v7"),)
    assert [(i.offset, i.label, i.predicted) for i in event.labelled] == [(12, 1, 1), (13, 2, None)]
    assert Observations.parse(event.to_bytes()) == event


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (None, "empty record"),
        (b'{"kind": "obs", "task":', "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"task": "tfns-sentiment"}', "unknown kind None"),
        (b'{"kind": "gossip", "task": "tfns-sentiment"}', "unknown kind 'gossip'"),
        (b'{"kind": "tick"}', "missing field 'task'"),
        (b'{"kind": "tick", "task": "tfns-sentiment", "at": 1}', "unexpected field(s) at"),
        (b'{"kind": "tick", "task": "astrology"}', "task: unknown task 'astrology'"),
        (b'{"kind": "tick", "task": 7}', "task: expected a string"),
        (
            b'{"kind": "job_end", "task": "tfns-sentiment", "job_id": "j", "state": "started"}',
            "state: expected one of finished, rejected, superseded, failed",
        ),
        (
            b'{"kind": "adapter", "task": "tfns-sentiment", "version": "v", "job_id": null,'
            b' "created_ms": -1}',
            "created_ms: expected a whole number >= 0, got -1",
        ),
        (
            b'{"kind": "obs", "task": "tfns-sentiment", "inputs": [1, true], "predictions": [],'
            b' "labelled": []}',
            "inputs[1]: expected a whole number >= 0, got True",
        ),
        (
            b'{"kind": "obs", "task": "tfns-sentiment", "inputs": [], "predictions": [[1, 1.5, "v"]],'
            b' "labelled": []}',
            "predictions[0].confidence: expected a probability in [0, 1], got 1.5",
        ),
        (
            b'{"kind": "obs", "task": "tfns-sentiment", "inputs": [], "predictions": [],'
            b' "labelled": [[0, "7", 1, null, null, 0]]}',
            "labelled[0].offset: expected a whole number >= 0, got '7'",
        ),
        (
            b'{"kind": "obs", "task": "tfns-sentiment", "inputs": [], "predictions": [],'
            b' "labelled": [[0, 7, 1]]}',
            "labelled[0]: expected an object with partition, offset",
        ),
        (
            b'{"kind": "obs", "task": "tfns-sentiment", "inputs": {}, "predictions": [],'
            b' "labelled": []}',
            "inputs: expected a list",
        ),
    ],
)
def test_bad_task_events_are_refused_with_a_reason(raw, says):
    with pytest.raises(EventError) as caught:
        parse_task_event(raw)
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)  # handlers of ValueError keep working


def test_parse_of_one_kind_refuses_another():
    with pytest.raises(EventError, match="expected kind 'obs', got 'tick'"):
        Observations.parse(TaskTick(TASK).to_bytes())
    with pytest.raises(EventError, match="join tick: ts_ms: expected a whole number"):
        JoinTick.parse(b'{"kind": "join_tick", "ts_ms": "soon"}')


def test_events_are_frozen():
    with pytest.raises(AttributeError):
        EVENTS[-1].task = "banking77-intent"  # type: ignore[misc]


# --- join state -------------------------------------------------------------------------
OLD_ENTRIES = {
    "a": {"s": "w", "pt": 0, "dl": TS + 60_000, "i": {"task": TASK, "text": "up 5%", "ts": TS, "at": TS}, "oi": 3},
    "b": {"s": "w", "pt": 0, "dl": TS + 60_000, "p": [2, "v7", 0.8, TASK], "op": 4},
    "c": {"s": "h", "pt": 0, "dl": TS + 1_000, "i": {"task": TASK, "text": "flat", "ts": TS, "at": TS},
          "f": {"task": TASK, "label": 1, "ts": TS, "src": "feedback"}, "oi": 5, "of": 6},
    "d": {"s": "d", "pt": 0, "dl": TS + 60_000, "lab": 1, "oi": 1, "op": 1, "of": 1},
    "e": {"s": "d", "pt": 0, "dl": TS + 60_000, "r": 1, "lab": 0},
    "x": {"s": "x", "pt": 0, "dl": TS + 60_000},
}  # fmt: skip


def test_old_changelog_entries_read_into_named_fields():
    a = JoinEntry.from_value(OLD_ENTRIES["a"])
    assert a.interaction == InteractionPart(TASK, "up 5%", ts_ms=TS, seen_at_ms=TS)
    assert (a.interaction_offset, a.prediction, a.feedback) == (3, None, None)
    b = JoinEntry.from_value(OLD_ENTRIES["b"])
    assert b.prediction == PredictionPart(TASK, 2, "v7", 0.8, token_count=None)
    c = JoinEntry.from_value(OLD_ENTRIES["c"])
    assert c.state == HELD and c.feedback == FeedbackPart(TASK, 1, ts_ms=TS, source="feedback")
    d, e = JoinEntry.from_value(OLD_ENTRIES["d"]), JoinEntry.from_value(OLD_ENTRIES["e"])
    assert (d.state, d.label, d.recovered, e.recovered) == (DONE, 1, False, True)
    for value in OLD_ENTRIES.values():
        entry = JoinEntry.from_value(value)
        assert "s" not in entry.to_value()  # written back in the new format
        assert JoinEntry.from_value(orjson.loads(orjson.dumps(entry.to_value()))) == entry


@pytest.mark.parametrize(
    "value",
    [
        {"s": "q", "pt": 0, "dl": 1},
        {"state": "gone", "partition": 0, "deadline_ms": 1},
        {"state": "waiting", "partition": 0},
        {"state": "waiting", "partition": 0, "deadline_ms": 1, "interaction": {"task": TASK}},
    ],
)
def test_unreadable_entries_raise(value):
    with pytest.raises((KeyError, TypeError, ValueError)):
        JoinEntry.from_value(value)


def interaction(i: str, text: str = "$AAPL beats estimates") -> Interaction:
    return Interaction(interaction_id=i, task=TASK, text=text, ts_ms=TS)


def prediction(i: str, label: int = 1, token_count: int | None = None) -> Prediction:
    probs = [0.1, 0.1, 0.1]
    probs[label] = 0.8
    return Prediction(
        interaction_id=i, task=TASK, label=label, probs=probs, adapter_version="v9",
        model_id="m", latency_ms=1.0, ts_ms=TS, token_count=token_count,
    )  # fmt: skip


def feedback(i: str, label: int = 1) -> Feedback:
    return Feedback(interaction_id=i, task=TASK, label=label, ts_ms=TS)


def test_a_worker_upgraded_in_place_carries_on_from_old_state_and_writes_the_new_format():
    store = {
        **OLD_ENTRIES,
        progress_key(0): {"time": TS, "labelled_next": 9, "counts": {"labelled": 4}},
    }
    join = JoinPartition(0, store, JoinConfig(ttl_ms=60_000, prediction_wait_ms=1_000))
    assert (join.stream_time, join.labelled_next, join.counts["labelled"]) == (TS, 9, 4)
    join.on_feedback(feedback("a", 2), offset=7, ts_ms=TS + 10)  # a: interaction known
    join.on_interaction(interaction("b"), offset=8, ts_ms=TS + 10)  # b: prediction known
    join.on_feedback(feedback("b", 0), offset=9, ts_ms=TS + 10)
    join.on_feedback(feedback("d", 0), offset=10, ts_ms=TS + 10)  # d: done, label 1
    join.on_interaction(interaction("e"), offset=99, ts_ms=TS + 10)  # e: a recovered replay
    join.tick(TS + 1_000)  # c: held; its wait for the prediction ends
    by_id = {e.interaction_id: e for e in join.take_labelled()}
    assert {i: (e.label, e.predicted_label, e.text) for i, e in by_id.items()} == {
        "a": (2, None, "up 5%"),
        "b": (0, 2, "$AAPL beats estimates"),
        "c": (1, None, "flat"),
    }
    assert by_id["b"].adapter_version == "v7"
    assert [d.error for d in join.take_dead_letters()] == ["conflicting_feedback"]
    changes = join.changes()
    assert {changes[k]["state"] for k in "abc"} == {"done"}
    assert all(store[key] == changes[key] for key in "abc")  # the store holds what was written
    assert store["x"] == OLD_ENTRIES["x"]  # untouched entries stay as they were, readable
    assert JoinPartition(0, store, join.config).counts == join.counts  # and read back again


def test_the_input_statistic_uses_the_predictions_token_count():
    join = JoinPartition(0, {}, JoinConfig(ttl_ms=60_000, prediction_wait_ms=0))
    join.on_interaction(interaction("tok", "two words"), offset=0, ts_ms=TS)
    assert join.take_observations() == {}  # waits for the prediction's count
    join.on_prediction(prediction("tok", token_count=11), offset=0, ts_ms=TS)
    join.on_prediction(prediction("early", token_count=5), offset=1, ts_ms=TS)
    join.on_interaction(interaction("early", "one"), offset=1, ts_ms=TS)
    join.on_prediction(prediction("plain"), offset=2, ts_ms=TS)  # sent no token count
    join.on_interaction(interaction("plain", "three words here"), offset=2, ts_ms=TS)
    join.on_interaction(interaction("unserved", "four words in all"), offset=3, ts_ms=TS)
    join.on_feedback(feedback("unserved"), offset=0, ts_ms=TS)  # goes out without prediction
    assert join.take_observations()[TASK].inputs == [11, 5, 3, 4]


def test_an_interaction_that_expires_unserved_counts_its_words_once():
    join = JoinPartition(0, {}, JoinConfig(ttl_ms=1_000, prediction_wait_ms=0))
    join.on_interaction(interaction("lone", "a b c d e"), offset=0, ts_ms=TS)
    join.tick(TS + 1_000)
    join.on_prediction(prediction("lone", token_count=9), offset=0, ts_ms=TS + 1_001)  # late
    assert join.take_observations()[TASK].inputs == [5]
    assert join.counts["late_predictions"] == 1
