"""Fuzz every consumer's decode path, in-process, with thousands of hostile records; and check
that the exported JSON Schema rejects exactly what the consumers reject.

Every consumer (serve, the worker's join and adapter agents, the trainer, the adapter
follower) decodes through :func:`schemas.codec.decode`, so each case here is checked against
the very function those processes run. ``test_fuzz_broker.py`` then sends a large batch of
the same cases through the real broker to the real processes.

For each case: decoding never raises; a bad record becomes a DeadLetter with an error code, a
reason and its raw bytes; a good one round-trips. The schema checker gives the same verdict,
except for the rules JSON Schema cannot state (``SCHEMA_CANNOT_SAY``), where the consumer is
the stricter one, never the other way round.
"""

from __future__ import annotations

import base64
import collections

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from schemas import limits
from schemas.codec import decode
from schemas.export import json_schemas
from schemas.messages import (
    AdapterChunk,
    AdapterManifest,
    DeadLetter,
    Feedback,
    Interaction,
    LabelledExample,
    Prediction,
    TrainJob,
)
from tests.faults.cases import Case, cases
from tests.faults.schema_check import valid

pytestmark = pytest.mark.faults

#: Which process decodes each message type.
CONSUMERS = {
    Interaction: "serve, worker join",
    Feedback: "worker join",
    Prediction: "worker join",
    LabelledExample: "trainer (labelled ranges), worker (recovery)",
    TrainJob: "trainer",
    AdapterManifest: "serve/trainer follower, worker adapters agent",
    AdapterChunk: "serve/trainer follower",
}
MAX_BYTES = {
    AdapterManifest: limits.MAX_MODEL_UPDATE_BYTES,
    AdapterChunk: limits.MAX_MODEL_UPDATE_BYTES,
}
EXAMPLES = 1500

#: Consumer checks JSON Schema cannot express; the reason a consumer gives names each one.
SCHEMA_CANNOT_SAY = {
    "timestamp in the future (relative to the consumer's clock)": ("in the future",),
    "record size": ("bytes; the limit is",),
    "rules across fields": (
        "probs:",
        "overlaps training range",
        "payload_b64:",
        "must be greater than start",
        "is not below chunks",
    ),
    "an integral float where an integer is due (JSON Schema calls 1.0 an integer)": (
        "Input should be a valid integer",
    ),
}

SCHEMAS = json_schemas()
TRIED: collections.Counter[str] = collections.Counter()
MISMATCHES: collections.Counter[str] = collections.Counter()


def check(model: type, case: Case) -> None:
    TRIED[model.__name__] += 1
    limit = MAX_BYTES.get(model, limits.MAX_RECORD_BYTES)
    out = decode(model, case.raw, topic="t", partition=0, offset=7, max_bytes=limit)
    if isinstance(out, DeadLetter):
        assert case.expect in ("bad", "either"), (case, out.reason)
        assert out.error and out.reason and out.source_topic == "t" and out.offset == 7
        assert out.raw == case.raw[: len(out.raw)] and out.raw_size == len(case.raw)
        assert DeadLetter.from_bytes(out.to_bytes()) == out  # the dead letter itself is valid
        accepted = False
    else:
        assert case.expect in ("good", "either"), (case.kind, case.raw[:300])
        assert model.from_bytes(out.to_bytes(), max_bytes=limit) == out
        accepted = True
    try:
        obj = orjson.loads(case.raw)
    except orjson.JSONDecodeError:
        assert not accepted
        return  # not JSON: no schema applies, and the consumer rejected it
    by_schema = valid(obj, SCHEMAS[model.__name__])
    if by_schema == accepted:
        return
    assert by_schema and not accepted, ("the schema is stricter than the consumer", case, obj)
    why = next(
        (
            name
            for name, needles in SCHEMA_CANNOT_SAY.items()
            if any(n in out.reason for n in needles)
        ),
        None,
    )
    assert why is not None, ("the schema accepts what the consumer rejects", case.kind, out.reason)
    MISMATCHES[why] += 1


def fuzz(model: type):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(model))
    def run(case: Case) -> None:
        check(model, case)

    return run


@pytest.mark.parametrize("model", list(CONSUMERS), ids=lambda m: m.__name__)
def test_every_hostile_record_is_dead_lettered_with_a_reason(model):
    fuzz(model)()
    assert TRIED[model.__name__] >= EXAMPLES // 2


def test_known_edge_cases_agree_with_the_schema():
    """Cases a random search may miss, spelled out."""
    from tests.faults.cases import template

    edge = [
        (Interaction, {**template(Interaction), "text": " \t\n"}, "bad"),
        (Interaction, {**template(Interaction), "text": "\x00\x07 ok"}, "good"),
        (Interaction, {**template(Interaction), "schema_version": 2}, "bad"),
        (Feedback, {**template(Feedback), "label": 3}, "bad"),
        (Feedback, {**template(Feedback), "label": True}, "bad"),
        (Feedback, {**template(Feedback), "task": "banking77-intent", "label": 76}, "good"),
        (Prediction, {**template(Prediction), "probs": [0.5, 0.5]}, "bad"),
        (TrainJob, {**template(TrainJob), "tasks": []}, "bad"),
        (AdapterChunk, {**template(AdapterChunk), "index": 2}, "bad"),
        (AdapterManifest, {**template(AdapterManifest), "num_labels": 4}, "bad"),
    ]
    for model, record, expect in edge:
        check(model, Case("edge", orjson.dumps(record), expect))


def test_zz_report_cases_tried():
    total = sum(TRIED.values())
    print(f"\nfuzzed decode cases: {total} ({dict(TRIED)}); schema-vs-consumer differences, all "
          f"documented: {dict(MISMATCHES)}")  # fmt: skip
    assert total >= 10_000 or len(TRIED) < len(CONSUMERS)  # run alone, a subset is fine


def test_dead_letter_keeps_the_raw_bytes_of_oversized_records():
    raw = b"{" + b" " * (limits.MAX_RECORD_BYTES + 10) + b"}"
    out = decode(Interaction, raw, topic="t", partition=1, offset=2)
    assert isinstance(out, DeadLetter) and out.error == "too_large" and out.raw_truncated
    assert base64.b64decode(out.raw_b64) == raw[: len(out.raw)]
