"""``streamtune replay`` skips exactly the rows whose records the consumers would dead-letter,
and the exported JSON Schema says the same (up to the documented clock and size rules).

Fuzzed rows (texts with control characters, blank, huge or ordinary; labels in and out of
range) go through the real command line to the real broker; each row's equivalent wire
records are judged by the consumers' decode path and by the schema."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas import limits
from schemas.codec import decode
from schemas.export import json_schemas
from schemas.messages import DeadLetter, Feedback, Interaction
from schemas.topics import FEEDBACK, INTERACTIONS
from streamtune.core.settings import Settings
from tests.faults.cases import NOW, TASK
from tests.faults.schema_check import valid
from tests.faults.test_cli_errors import run_cli
from tests.kafka_helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROWS = 400
texts = st.one_of(
    st.text(
        st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl", "Ll", "Nd", "So"]),
        max_size=80,
    ),
    st.sampled_from(["", " ", "\t\n", "$AAPL beats", "a" * limits.MAX_TEXT_CHARS]),
    st.integers(limits.MAX_TEXT_CHARS + 1, limits.MAX_TEXT_CHARS + 50).map(lambda n: "b" * n),
)
labels = st.one_of(st.none(), st.integers(-3, 5))


def collect_rows() -> list[tuple[str, int | None]]:
    rows: list[tuple[str, int | None]] = []

    @settings(
        max_examples=ROWS,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(texts, labels)
    def gather(text: str, label: int | None) -> None:
        rows.append((text, label))

    gather()
    return rows


def consumers_reject(line: int, text: str, label: int | None) -> bool:
    records = [
        (Interaction, {"interaction_id": f"fz-{line}", "task": TASK, "text": text, "ts_ms": NOW})
    ]
    if label is not None:
        records.append(
            (Feedback, {"interaction_id": f"fz-{line}", "task": TASK, "label": label, "ts_ms": NOW})
        )
    schemas = json_schemas()
    verdicts = []
    for model, record in records:
        out = decode(model, orjson.dumps(record), topic="t", partition=0, offset=0)
        by_consumer = isinstance(out, DeadLetter)
        assert valid(record, schemas[model.__name__]) != by_consumer, (record, out)
        verdicts.append(by_consumer)
    return any(verdicts)


def test_replay_skips_exactly_what_the_consumers_reject(topics: Settings, tmp_path):
    rows = collect_rows()
    path = tmp_path / "fuzz.jsonl"
    with path.open("wb") as handle:
        for text, label in rows:
            handle.write(orjson.dumps({"text": text, "label": label}) + b"\n")
    proc = run_cli(
        ["replay", str(path), "--rate", "0", "--feedback-fraction", "1", "--id-prefix", "fz",
         "--show-bad", str(ROWS + 1)],
        {"STREAMTUNE_BOOTSTRAP_SERVERS": topics.bootstrap_servers, "STREAMTUNE_TOPIC_PREFIX": topics.topic_prefix},
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    skipped = {int(m.group(1)) for m in re.finditer(r"fuzz\.jsonl:(\d+): skipped", proc.stderr)}
    expected = {
        line
        for line, (text, label) in enumerate(rows, start=1)
        if consumers_reject(line, text, label)
    }
    assert skipped == expected, (sorted(skipped ^ expected)[:10], proc.stderr[-2000:])
    # Every row kept is published once; with --feedback-fraction 1, every kept row with a
    # label has exactly one feedback record, with that label, and no other row has one.
    kept = {f"fz-{line}": label for line, (_, label) in enumerate(rows, start=1)}
    for line in skipped:
        del kept[f"fz-{line}"]
    labelled = {iid: label for iid, label in kept.items() if label is not None}
    published = asyncio.run(read_all(topics, topics.topic(INTERACTIONS), expect=len(kept)))
    feedback = asyncio.run(read_all(topics, topics.topic(FEEDBACK), expect=len(labelled)))
    interactions = [Interaction.from_bytes(record.value) for record in published]
    answers = [Feedback.from_bytes(record.value) for record in feedback]
    assert sorted(i.interaction_id for i in interactions) == sorted(kept)
    assert len(answers) == len(labelled), (len(answers), len(labelled))
    assert {f.interaction_id: f.label for f in answers} == labelled
    assert labelled, "the fuzzed rows had no valid label: nothing about feedback was checked"
    print(
        f"\nreplay fuzz: {len(rows)} rows, {len(skipped)} skipped, {len(answers)} feedback, "
        "all agreeing with the consumers and the schema"
    )
