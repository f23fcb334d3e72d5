"""The monitor's picture: the accuracy estimate, the adapter timeline, the report's files."""

from __future__ import annotations

import base64
import json
import random

from schemas.messages import (
    AdapterManifest,
    DriftEvent,
    Feedback,
    Interaction,
    JobStatus,
    Prediction,
    TrainJob,
)
from streamtune.model_updates.records import revert_manifest
from streamtune.monitor.report import write_report
from streamtune.monitor.state import MonitorState
from streamtune.monitor.status import describe

TASK = "tfns-sentiment"
T0 = 1_700_000_000_000


def answer(state: MonitorState, i: int, label: int, confidence: float, version: str = "base"):
    rest = (1 - confidence) / 2
    probs = [rest, rest, rest]
    probs[label] = confidence
    p = Prediction(
        interaction_id=f"i{i}", task=TASK, label=label, probs=probs, adapter_version=version,
        model_id="m", latency_ms=10.0, ts_ms=T0 + i * 10,
    )  # fmt: skip
    state.add("predictions", p.interaction_id.encode(), p.to_bytes(), p.ts_ms)


def feedback(state: MonitorState, i: int, label: int, delay_ms: int = 5000):
    fb = Feedback(interaction_id=f"i{i}", task=TASK, label=label, ts_ms=T0 + i * 10 + delay_ms)
    state.add("feedback", fb.interaction_id.encode(), fb.to_bytes(), fb.ts_ms)


def stream(state: MonitorState, n: int, accuracy: float, confidence: float, seed: int = 0):
    """``n`` answers at ``confidence``, right with probability ``accuracy``; feedback after."""
    rng = random.Random(seed)
    truth = []
    for i in range(n):
        right = rng.random() < accuracy
        answer(state, i, 1, confidence)
        truth.append(1 if right else 0)
        if i >= 50:  # feedback runs 50 answers behind
            feedback(state, i - 50, truth[i - 50])
    for i in range(n - 50, n):
        feedback(state, i, truth[i])


def test_a_calibrated_model_is_estimated_within_a_few_points():
    state = MonitorState(cbpe_block=100)
    stream(state, 2000, accuracy=0.8, confidence=0.8)
    cbpe = state.snapshot()["tasks"][TASK]["cbpe"]
    assert cbpe["blocks"] == 20
    assert cbpe["mae"] < 0.05


def test_calibration_corrects_an_overconfident_model():
    state = MonitorState(cbpe_block=100, calibration_window=200)
    stream(state, 2000, accuracy=0.6, confidence=0.95)
    task = state.snapshot()["tasks"][TASK]
    assert task["cbpe"]["raw_mae"] > 0.3  # the raw confidence is 35 points too high
    assert task["cbpe"]["mae"] < 0.1
    assert abs(task["estimated_now"] - 0.6) < 0.08
    assert abs(task["accuracy_now"] - 0.6) < 0.1


def test_feedback_before_its_answer_and_repeated_answers_count_once():
    state = MonitorState(window=10, cbpe_block=10)
    feedback(state, 0, 1, delay_ms=-5)  # the label came first
    answer(state, 0, 1, 0.9)
    answer(state, 0, 0, 0.9)  # answered again after a rebalance: not judged again
    task = state.snapshot()["tasks"][TASK]
    assert task["labelled"] == 1 and task["accuracy_now"] == 1.0
    assert task["predictions"] == 2


def manifest(version: str, ts: int) -> AdapterManifest:
    return AdapterManifest(
        task=TASK, version=version, base_model_id="m", num_labels=3, sha256="0" * 64,
        size_bytes=3, created_ts_ms=ts, key_id="k", signature_b64="c2ln", transfer="inline",
        payload_b64=base64.b64encode(b"abc").decode(), metrics={"holdout_macro_f1": 0.7},
    )  # fmt: skip


def revert(ts: int) -> AdapterManifest:
    return revert_manifest(manifest("v1", ts), sequence=ts * 1000)


def test_timeline_shows_promotions_supersessions_and_rollbacks():
    state = MonitorState()
    key = TASK.encode()
    state.add("model-updates", key, manifest("v1", T0).to_bytes(), T0)
    state.add("model-updates", f"{TASK}@v1".encode(), manifest("v1", T0).to_bytes(), T0)
    state.add("model-updates", key, manifest("v2", T0 + 1).to_bytes(), T0 + 1)
    state.add("model-updates", key, manifest("v1", T0 + 2).to_bytes(), T0 + 2)
    state.add("model-updates", key, None, T0 + 3)  # a tombstone: unsigned, reverts nothing
    assert state.snapshot()["live"] == {TASK: "v1"}
    state.add("model-updates", key, revert(T0 + 4).to_bytes(), T0 + 4)
    events = [(e["version"], e["kind"]) for e in state.snapshot()["timeline"]]
    assert events == [
        ("v1", "promoted"),
        ("v1", "superseded"),
        ("v2", "promoted"),
        ("v2", "superseded"),
        ("v1", "rolled_back"),
        ("base", "rejected"),
        ("v1", "superseded"),
        ("base", "rolled_back"),
    ]
    assert state.snapshot()["live"] == {TASK: "base"}


def test_jobs_progress_and_a_superseded_job_leaves_flight():
    state = MonitorState()

    def job(job_id: str, ts: int) -> None:
        j = TrainJob(
            job_id=job_id, tasks=[TASK], reason="drift", labelled_topic="labelled",
            train_ranges=[{"partition": 0, "start": 0, "end": 10}],
            holdout_ranges=[{"partition": 0, "start": 10, "end": 12}], created_ts_ms=ts,
        )  # fmt: skip
        state.add("train-jobs", TASK.encode(), j.to_bytes(), ts)

    def status(job_id: str, state_name: str, ts: int, progress: float | None = None) -> None:
        s = JobStatus(
            job_id=job_id, tasks=[TASK], state=state_name, attempt=1, progress=progress,
            message="stale" if state_name == "superseded" else None, source="t", ts_ms=ts,
        )  # fmt: skip
        state.add("train-status", TASK.encode(), s.to_bytes(), ts)

    job("j1", T0)
    status("j1", "progress", T0, progress=0.5)
    assert state.snapshot()["jobs"][0]["progress"] == 0.5
    assert "j1 (tfns-sentiment, drift): progress 50%" in describe(state.snapshot())
    job("j2", T0 + 1)
    status("j1", "superseded", T0 + 2)
    states = {j["job_id"]: j["state"] for j in state.snapshot()["jobs"]}
    assert states == {"j1": "superseded", "j2": "queued"}
    text = describe(state.snapshot())
    assert "j2 (tfns-sentiment, drift): queued" in text and "j1" not in text
    assert [(e["version"], e["kind"]) for e in state.snapshot()["timeline"]] == [
        ("j1", "job_superseded")
    ]


def test_report_writes_summary_plots_and_figure_json(tmp_path):
    state = MonitorState(cbpe_block=100)
    stream(state, 600, accuracy=0.7, confidence=0.7)
    drift = DriftEvent(
        event_id="d1", task=TASK, detector="adwin", statistic="error_rate", value=0.4,
        position=300, examples_since_change=24, ts_ms=T0 + 3000,
    )  # fmt: skip
    state.add("drift-events", TASK.encode(), drift.to_bytes(), drift.ts_ms)
    state.add("model-updates", TASK.encode(), manifest("v1", T0 + 4000).to_bytes(), T0 + 4000)
    out = write_report(state.snapshot(), tmp_path / "run", "run")
    for name in ("accuracy", "cbpe", "throughput", "latency"):
        assert (out / f"{name}.png").stat().st_size > 5000
        figure = json.loads((out / f"{name}.json").read_text())
        assert figure["data"] and figure["layout"]["title"]
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert {m["kind"] for m in accuracy["markers"]} == {"drift", "promotion"}
    assert [m["x"] for m in accuracy["markers"] if m["kind"] == "drift"] == [3.0]
    summary = (out / "summary.md").read_text()
    assert "| tfns-sentiment | 600 | 600 |" in summary
    assert "v1 **promoted**" in summary
    assert "error_rate = 0.4 (position 300, began 24 examples ago)" in summary


def test_the_entity_view_names_what_the_alerts_name():
    """The monitor uses the worker's extractor: cashtags and aliases, canonical names."""
    from streams.entities import EntityExtractor

    state = MonitorState(entities=EntityExtractor.from_rows([("RELIANCE", "RIL")]))
    texts = ["RIL shares slump after results", "$brk.b and $AAPL rally", "no entity here"]
    for i, text in enumerate(texts):
        iid = f"i{i}"
        state.add("interactions", iid.encode(), Interaction(
            interaction_id=iid, task=TASK, text=text, ts_ms=T0 + i).to_bytes(), T0 + i)  # fmt: skip
        state.add("predictions", iid.encode(), Prediction(
            interaction_id=iid, task=TASK, label=0, probs=[0.8, 0.1, 0.1], adapter_version="v1",
            model_id="m", latency_ms=1.0, ts_ms=T0 + i).to_bytes(), T0 + i)  # fmt: skip
    entities = state.snapshot()["entities"]
    assert set(entities) == {"RELIANCE", "BRK.B", "AAPL"}
    assert all(v["n"] == 1 for v in entities.values())
