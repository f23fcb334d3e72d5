"""Hypothesis strategies for hostile records: each case is raw bytes for a consumer's message
type plus what the contract says must happen to it (``bad``: dead-letter; ``good``: processed).

Cases: random bytes, invalid JSON, JSON that is no object, wrong types, missing and extra
fields, huge texts and records, control characters and invalid surrogates, NaN and infinity,
unknown tasks and labels, timestamps far in the past or future.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from schemas import limits
from schemas.fields import now_ms
from schemas.messages import (
    AdapterChunk,
    AdapterManifest,
    Feedback,
    Interaction,
    LabelledExample,
    Prediction,
    TrainJob,
)
from schemas.tasks import get_task, known_tasks

TASK = "tfns-sentiment"
#: One clock reading for the whole run, so that generation is reproducible.
NOW = now_ms()
ENTITY = re.compile(r"^[A-Za-z0-9$][A-Za-z0-9$._\-]{0,31}$")


@dataclass(frozen=True)
class Case:
    kind: str
    raw: bytes
    expect: str  # "bad", "good" or "either" (the invariants still hold)


def template(model: type, n: int = 0, task: str = TASK) -> dict[str, Any]:
    """A valid record of ``model`` as a dict (ids made unique by ``n``)."""
    ts = NOW
    iid = f"fz-{n}"
    if model is Interaction:
        return {
            "interaction_id": iid,
            "task": task,
            "text": f"shares of $ABC rise {n}",
            "ts_ms": ts,
        }
    if model is Feedback:
        return {"interaction_id": iid, "task": task, "label": n % 3, "ts_ms": ts}
    if model is Prediction:
        return {
            "interaction_id": iid, "task": task, "label": 0, "probs": [0.5, 0.25, 0.25],
            "adapter_version": "base", "model_id": "m", "latency_ms": 1.5, "ts_ms": ts,
        }  # fmt: skip
    if model is LabelledExample:
        return {
            "interaction_id": iid, "task": task, "text": f"t {n}", "label": 1, "ts_ms": ts,
            "source": "fuzz",
        }  # fmt: skip
    if model is TrainJob:
        return {
            "job_id": f"job-{n}", "tasks": [task], "reason": "manual", "labelled_topic": "labelled",
            "train_ranges": [{"partition": 0, "start": 0, "end": 10}],
            "holdout_ranges": [{"partition": 0, "start": 10, "end": 12}], "created_ts_ms": ts,
        }  # fmt: skip
    if model is AdapterManifest:
        return {
            "task": task, "version": f"v{n}", "base_model_id": "m", "num_labels": 3,
            "sha256": "0" * 64, "size_bytes": 3, "created_ts_ms": ts, "key_id": "k",
            "signature_b64": "c2ln", "transfer": "inline", "payload_b64": "AAAA",
        }  # fmt: skip
    if model is AdapterChunk:
        return {"task": task, "version": f"v{n}", "index": 0, "chunks": 2, "data_b64": "AAAA"}
    raise ValueError(model)


REQUIRED = {
    model: [name for name, f in model.model_fields.items() if f.is_required()]
    for model in (
        Interaction,
        Feedback,
        Prediction,
        LabelledExample,
        TrainJob,
        AdapterManifest,
        AdapterChunk,
    )
}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


@st.composite
def random_bytes(draw: st.DrawFn, model: type) -> Case:
    return Case("random_bytes", draw(st.binary(max_size=400)), "either")


@st.composite
def invalid_json(draw: st.DrawFn, model: type) -> Case:
    raw = _dump(template(model, draw(st.integers(0, 10**6))))
    cut = draw(st.integers(1, len(raw) - 1))
    return Case("invalid_json", raw[:cut], "bad")


@st.composite
def not_an_object(draw: st.DrawFn, model: type) -> Case:
    value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    return Case("not_an_object", _dump(value), "bad")


@st.composite
def wrong_type(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    name = draw(st.sampled_from(sorted(record)))
    value = draw(json_values.filter(lambda v: _json_type(v) != _json_type(record[name])))
    record[name] = value
    return Case("wrong_type", _dump(record), "bad")


@st.composite
def missing_field(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    del record[draw(st.sampled_from(REQUIRED[model]))]
    return Case("missing_field", _dump(record), "bad")


@st.composite
def extra_fields(draw: st.DrawFn, model: type) -> Case:
    """Unknown fields are ignored (a newer producer, same major version): still good."""
    record = template(model, draw(st.integers(0, 10**6)))
    names = st.text(min_size=1, max_size=12).filter(lambda k: k not in model.model_fields)
    record.update(draw(st.dictionaries(names, json_values, min_size=1, max_size=4)))
    return Case("extra_fields", _dump(record), "good")


@st.composite
def huge(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    if "text" in record and draw(st.booleans()):
        record["text"] = "x" * draw(
            st.integers(limits.MAX_TEXT_CHARS + 1, 3 * limits.MAX_TEXT_CHARS)
        )
    else:  # the whole record past the size limit
        budget = (
            limits.MAX_MODEL_UPDATE_BYTES
            if model in (AdapterManifest, AdapterChunk)
            else limits.MAX_RECORD_BYTES
        )
        record["padding"] = "p" * draw(st.integers(budget + 1, budget + 4096))
    return Case("huge", _dump(record), "bad")


@st.composite
def control_characters(draw: st.DrawFn, model: type) -> Case:
    """Control characters are allowed in a text that is not blank (they are just text)."""
    record = template(model, draw(st.integers(0, 10**6)))
    field = (
        "text"
        if "text" in record
        else next(k for k in ("interaction_id", "job_id", "version") if k in record)
    )
    chars = st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Ll"])
    value = draw(st.text(chars, min_size=1, max_size=60))
    record[field] = value
    if field == "text":
        expect = "good" if value.strip() else "bad"
    else:  # ids admit only [A-Za-z0-9_.:-]
        expect = "good" if limits.ID_RE.fullmatch(value) else "bad"
    return Case("control_characters", _dump(record), expect)


@st.composite
def invalid_surrogate(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    field = draw(st.sampled_from(sorted(k for k, v in record.items() if isinstance(v, str))))
    point = draw(st.integers(0xD800, 0xDFFF))
    marker = "SURROGATE"
    record[field] = f"a{marker}b"
    raw = _dump(record)
    if draw(st.booleans()):  # a lone \\uD8xx escape in the JSON text
        replacement = f"\\u{point:04x}".encode()
    else:  # the surrogate encoded as (invalid) UTF-8 bytes
        replacement = bytes([0xED, 0xA0 | ((point >> 6) & 0x1F), 0x80 | (point & 0x3F)])
    return Case("invalid_surrogate", raw.replace(marker.encode(), replacement), "bad")


@st.composite
def non_finite(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    numbers = sorted(
        k for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)
    )
    field = draw(st.sampled_from(numbers))
    record[field] = 12345
    literal = draw(
        st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"nan"])
    )
    raw = _dump(record).replace(f'"{field}":12345'.encode(), f'"{field}":'.encode() + literal)
    return Case("non_finite", raw, "bad")


@st.composite
def unknown_task(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    name = draw(
        st.from_regex(limits.TASK_PATTERN, fullmatch=True).filter(lambda t: t not in known_tasks())
    )
    if "tasks" in record:
        record["tasks"] = [name]
    else:
        record["task"] = name
    return Case("unknown_task", _dump(record), "bad")


@st.composite
def unknown_label(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    n = get_task(TASK).num_labels
    if "label" in record:
        record["label"] = draw(st.integers(n, limits.MAX_LABELS + 10))
    elif "num_labels" in record:
        record["num_labels"] = draw(st.integers(n + 1, limits.MAX_LABELS + 10))
    elif "index" in record:
        record["index"] = draw(st.integers(record["chunks"], 5000))
    elif "tasks" in record:
        record["tasks"] = [TASK, TASK]  # a job naming one task twice
    else:  # an interaction: an entity that is no ticker-like token
        record["entity"] = draw(
            st.text(min_size=1, max_size=40).filter(lambda e: not ENTITY.fullmatch(e))
        )
    return Case("unknown_label", _dump(record), "bad")


@st.composite
def bad_timestamp(draw: st.DrawFn, model: type) -> Case:
    record = template(model, draw(st.integers(0, 10**6)))
    fields = [k for k in record if k.endswith("ts_ms")]
    if not fields:
        return Case("bad_timestamp", _dump({**record, "index": -1}), "bad")
    skew = limits.MAX_CLOCK_SKEW_MS
    value = draw(
        st.one_of(
            st.integers(-(2**63), limits.MIN_TS_MS - 1),
            st.integers(NOW + skew + 48 * 3_600_000, 2**63 - 1),
        )
    )
    record[draw(st.sampled_from(fields))] = value
    return Case("bad_timestamp", _dump(record), "bad")


MUTATIONS = (
    random_bytes,
    invalid_json,
    not_an_object,
    wrong_type,
    missing_field,
    extra_fields,
    huge,
    control_characters,
    invalid_surrogate,
    non_finite,
    unknown_task,
    unknown_label,
    bad_timestamp,
)


def cases(model: type) -> st.SearchStrategy[Case]:
    """Any hostile (or harmless-but-odd) record for ``model``."""
    return st.one_of(*(mutation(model) for mutation in MUTATIONS))
