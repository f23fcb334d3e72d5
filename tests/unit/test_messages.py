"""Contracts: every message round-trips, and every kind of bad input is rejected with a reason."""

from __future__ import annotations

import random

import orjson
import pytest

from schemas import (
    MESSAGE_TYPES,
    DeadLetter,
    DecodeError,
    Feedback,
    Interaction,
    Prediction,
    TrainJob,
    decode,
)
from schemas.limits import MAX_RECORD_BYTES, MAX_TEXT_CHARS
from tests.examples import TS, examples


def interaction(**fields: object) -> bytes:
    base = {"interaction_id": "i-1", "task": "tfns-sentiment", "text": "hello", "ts_ms": TS}
    base.update(fields)
    return orjson.dumps(base)


def test_every_message_type_has_an_example():
    assert set(examples()) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_round_trip(name):
    message = examples()[name]
    raw = message.to_bytes()
    assert orjson.loads(raw)["schema_version"] == 1
    assert type(message).from_bytes(raw) == message


@pytest.mark.parametrize(
    ("raw", "kind", "needle"),
    [
        (b"{not json", "invalid_json", "invalid JSON"),
        (b"\xff\xfe\x00garbage", "invalid_utf8", "not UTF-8"),
        (b"[1, 2]", "wrong_type", "expected a JSON object"),
        (interaction(text=123), "validation", "text"),
        (interaction(ts_ms="yesterday"), "validation", "ts_ms"),
        (
            interaction(text="x" * (MAX_TEXT_CHARS + 1)),
            "validation",
            f"at most {MAX_TEXT_CHARS} characters",
        ),
        (interaction(text="   "), "validation", "empty or only whitespace"),
        (interaction(task="weather"), "unknown_task", "unknown task 'weather'"),
        (interaction(interaction_id="has space"), "validation", "interaction_id"),
        (interaction(ts_ms=1_700_000_000), "validation", "before 2000-01-01"),
        (interaction(ts_ms=10**14), "validation", "in the future"),
        (interaction(schema_version=2), "unsupported_version", "unsupported schema_version 2"),
        (b"x" * (MAX_RECORD_BYTES + 1), "too_large", "limit is"),
    ],
)
def test_bad_interactions_are_rejected_with_a_reason(raw, kind, needle):
    with pytest.raises(DecodeError) as caught:
        Interaction.from_bytes(raw)
    assert caught.value.kind == kind
    assert needle in caught.value.reason


def test_wrong_types_are_not_coerced():
    raw = orjson.dumps(
        {"interaction_id": "i-1", "task": "tfns-sentiment", "label": "1", "ts_ms": TS}
    )
    with pytest.raises(DecodeError, match="label"):
        Feedback.from_bytes(raw)


def test_label_range_is_checked_per_task():
    ok = orjson.dumps(
        {"interaction_id": "i-1", "task": "banking77-intent", "label": 76, "ts_ms": TS}
    )
    assert Feedback.from_bytes(ok).label == 76
    bad = orjson.dumps({"interaction_id": "i-1", "task": "tfns-sentiment", "label": 3, "ts_ms": TS})
    with pytest.raises(DecodeError, match=r"out of range for task 'tfns-sentiment' \(0..2\)"):
        Feedback.from_bytes(bad)


def test_prediction_probs_must_match_the_task():
    good = examples()["Prediction"].model_dump()
    with pytest.raises(DecodeError, match="has 2 entries"):
        Prediction.from_bytes(orjson.dumps({**good, "probs": [0.5, 0.5]}))
    with pytest.raises(DecodeError, match="sum to"):
        Prediction.from_bytes(orjson.dumps({**good, "probs": [0.5, 0.5, 0.5]}))


def test_train_job_holdout_must_not_overlap_training():
    job = examples()["TrainJob"].model_dump()
    job["holdout_ranges"] = [{"partition": 0, "start": 800, "end": 1000}]
    with pytest.raises(DecodeError, match="overlaps training range"):
        TrainJob.from_bytes(orjson.dumps(job))


def test_unknown_fields_are_ignored_for_forward_compatibility():
    message = Interaction.from_bytes(interaction(added_in_a_later_minor="x"))
    assert message.text == "hello"


def test_decode_returns_dead_letter_with_source_coordinates():
    out = decode(
        Interaction,
        interaction(task="weather"),
        topic="t-interactions",
        partition=2,
        offset=99,
        key=b"k",
    )
    assert isinstance(out, DeadLetter)
    assert (out.source_topic, out.partition, out.offset, out.error) == (
        "t-interactions",
        2,
        99,
        "unknown_task",
    )
    assert out.raw == interaction(task="weather")
    assert DeadLetter.from_bytes(out.to_bytes()) == out


def test_dead_letter_of_oversized_record_is_truncated_but_says_so():
    raw = b"y" * (MAX_RECORD_BYTES + 10)
    out = decode(Interaction, raw, topic="t", partition=0, offset=0)
    assert isinstance(out, DeadLetter)
    assert out.raw_truncated and out.raw_size == len(raw) and len(out.raw) < len(raw)
    assert len(out.to_bytes()) < MAX_RECORD_BYTES


def test_tombstone_is_a_dead_letter_not_a_crash():
    out = decode(Interaction, None, topic="t", partition=0, offset=3)
    assert isinstance(out, DeadLetter) and out.error == "empty"


def test_decode_never_raises_on_random_bytes():
    rng = random.Random(1234)
    for _ in range(300):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        for model in MESSAGE_TYPES.values():
            out = decode(model, raw, topic="t", partition=0, offset=0)
            assert isinstance(out, DeadLetter)


def test_decode_never_raises_on_mutated_valid_records():
    for name, message in examples().items():
        model = MESSAGE_TYPES[name]
        obj = orjson.loads(message.to_bytes())
        for key in list(obj):
            for value in (None, -1, 1e308, "", [], {}, "x" * 5000, True):
                mutated = {**obj, key: value}
                out = decode(model, orjson.dumps(mutated), topic="t", partition=0, offset=0)
                assert isinstance(out, model | DeadLetter)
