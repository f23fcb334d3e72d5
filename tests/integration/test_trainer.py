"""The trainer worker against the real broker, the real model and real data."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas import AdapterManifest, Prediction
from schemas.topics import MODEL_UPDATES, PREDICTIONS
from streamtune.core.settings import Settings
from streamtune.replay import ReplayRow, replay
from tests.conftest import DATA
from tests.kafka_helpers import read_all
from tests.serve_helpers import running_server, wait_until
from tests.trainer_helpers import (
    crypto_rows,
    csv_rows,
    job,
    running_trainer,
    shuffled,
    statuses,
    submit,
    wait_for_outcome,
    write_labelled,
)

pytestmark = pytest.mark.integration

TFNS = "tfns-sentiment"


@pytest.fixture
def train_settings(topics: Settings, tmp_path: Path) -> Settings:
    from models.signing import generate_keypair

    key, _ = generate_keypair(tmp_path / "keys" / "trusted" / "trainer")
    small = {
        "signing_key_file": key,
        "trusted_keys_dir": tmp_path / "keys" / "trusted",
        "serve_tasks": TFNS,
        "serve_group_id": f"{topics.topic_prefix}serve",
        "train_group_id": f"{topics.topic_prefix}train",
        "train_lora_r": 4,
        "train_lora_alpha": 8,
        "train_lora_targets": "query,value",
        "train_epochs": 2,
        "train_batch_size": 16,
        "train_max_length": 48,
        "train_validation_fraction": 0.0,
        "gate_anchor_size": 200,
        "gate_anchor_tolerance": 0.1,
        "train_retry_backoff_s": 0.1,
    }
    return Settings(**{**topics.model_dump(), **small})


async def adapters_published(settings: Settings) -> list[AdapterManifest]:
    records = await read_all(settings, settings.topic(MODEL_UPDATES))
    return [
        AdapterManifest.from_bytes(r.value, max_bytes=8 << 20)
        for r in records
        if r.key and b"@" not in r.key and b"#" not in r.key and r.value
    ]


@pytest.mark.timeout(1300)  # the trainer's start (180 s) and stop (120 s), one outcome (900 s)
def test_a_job_from_real_offsets_is_promoted_and_served(train_settings):
    """Crypto comments: the seed model answers them poorly; 300 labelled ones fix that, and a
    rehearsal sample of older finance tweets keeps the model from forgetting them. The fast
    head is off here, so the LoRA stage alone decides."""
    settings = Settings(**{**train_settings.model_dump(), "train_fast_head": False})
    rows = crypto_rows()

    async def go():
        older = await write_labelled(
            settings, csv_rows(DATA / "tfns" / "train.csv")[::30][:300], TFNS, "o"
        )
        train = await write_labelled(settings, rows[:300], TFNS, "c")
        holdout = await write_labelled(settings, rows[300:420], TFNS, "h")
        async with running_server(settings) as server, running_trainer(settings) as trainer:
            crypto_job = job(settings, "job-crypto", [TFNS], [train], [holdout])
            crypto_job = crypto_job.model_copy(update={"rehearsal_ranges": [older]})
            await submit(settings, crypto_job)
            outcome = await wait_for_outcome(settings, "job-crypto")
            assert outcome.state == "finished", outcome.message
            await wait_until(lambda: server.stats.versions[TFNS] == "job-crypto")
            texts = [
                ReplayRow(i + 2, text, label, None) for i, (text, label) in enumerate(rows[420:460])
            ]
            await replay(
                settings, iter(texts), task=TFNS, rate=0, id_prefix="after", progress=False
            )
            await wait_until(lambda: server.stats.answered >= 40)
            assert trainer.stats.promoted == 1
        predictions = [
            Prediction.from_bytes(r.value)
            for r in await read_all(settings, settings.topic(PREDICTIONS), expect=40)
        ]
        return outcome, predictions, await adapters_published(settings)

    outcome, predictions, live = asyncio.run(go())
    assert {p.adapter_version for p in predictions} == {"job-crypto"}
    m = outcome.metrics
    # The gate's evidence: a paired win on the 120 holdout comments, significant at 5%.
    assert m[f"{TFNS}/lora/gate_new_accuracy"] > m[f"{TFNS}/lora/gate_live_accuracy"]
    assert m[f"{TFNS}/lora/gate_p_value"] <= 0.05
    assert m[f"{TFNS}/lora/gate_holdout"] == 120
    assert [a.version for a in live] == ["job-crypto"] and live[0].parent_version == "base"
    assert live[0].metrics["gate_p_value"] == m[f"{TFNS}/lora/gate_p_value"]
    states = [s.state for s in asyncio.run(statuses(settings))]
    assert states[0] == "started" and "progress" in states and states[-1] == "finished"


@pytest.mark.timeout(1300)  # the trainer's start (180 s) and stop (120 s), one outcome (900 s)
def test_shuffled_labels_are_rejected_by_the_gate(train_settings):
    settings = train_settings
    rows = csv_rows(DATA / "tfns" / "train.csv")[::20][:400]  # the file is grouped by label

    async def go():
        train = await write_labelled(settings, shuffled(rows[:300]), TFNS, "s")
        holdout = await write_labelled(settings, rows[300:400], TFNS, "h")
        async with running_trainer(settings):
            await submit(settings, job(settings, "job-shuffled", [TFNS], [train], [holdout]))
            return await wait_for_outcome(settings, "job-shuffled"), await adapters_published(
                settings
            )

    outcome, live = asyncio.run(go())
    assert outcome.state == "rejected", outcome.message
    assert "head: rejected, holdout accuracy" in outcome.message
    assert "lora: rejected, holdout accuracy" in outcome.message
    assert live == []  # nothing published: the live model is unchanged
    for stage in ("head", "lora"):
        assert outcome.metrics[f"{TFNS}/{stage}/gate_p_value"] > 0.05


@pytest.mark.timeout(1300)  # the trainer's start (180 s) and stop (120 s), one outcome (900 s)
def test_corrupt_examples_are_retried_then_the_job_fails(train_settings):
    settings = Settings(**{**train_settings.model_dump(), "train_max_attempts": 2})
    garbage = [b"{not json", b"\xff\xfe", b'{"interaction_id": "x"}'] * 10

    async def go():
        train = await write_labelled(settings, [], TFNS, "g", raw=garbage)
        holdout = await write_labelled(
            settings, csv_rows(DATA / "tfns" / "valid.csv")[:30], TFNS, "h"
        )
        async with running_trainer(settings) as trainer:
            await submit(settings, job(settings, "job-corrupt", [TFNS], [train], [holdout]))
            outcome = await wait_for_outcome(settings, "job-corrupt")
            assert trainer.stats.attempts == 2 and trainer.stats.failed == 1
        return outcome, await statuses(settings), await adapters_published(settings)

    outcome, events, live = asyncio.run(go())
    assert outcome.state == "failed"
    assert "30 corrupt records skipped" in outcome.message
    assert [s.state for s in events if s.state in ("started", "failed")] == [
        "started",
        "started",
        "failed",
    ]
    assert live == []


@pytest.mark.timeout(1300)  # the trainer's start (180 s) and stop (120 s), one outcome (900 s)
def test_a_multi_task_job_reports_metrics_for_both_tasks(train_settings):
    settings = Settings(
        **{
            **train_settings.model_dump(),
            "gate_alpha": 1.0,  # no test: this checks the plumbing, not the gain
            "gate_min_improvement": -1.0,
            "gate_anchor_tolerance": 1.0,
            "train_fast_head": False,
        }
    )
    from schemas.tasks import get_task

    intents = get_task("banking77-intent").labels
    tfns = csv_rows(DATA / "tfns" / "train.csv")[::20]
    bank = csv_rows(DATA / "banking77" / "train.csv", label="category", labels=intents)

    async def go():
        train_a = await write_labelled(settings, tfns[:150], TFNS, "ta")
        train_b = await write_labelled(settings, bank[::40][:150], "banking77-intent", "tb")
        hold_a = await write_labelled(settings, tfns[150:200], TFNS, "ha")
        hold_b = await write_labelled(settings, bank[1::40][:50], "banking77-intent", "hb")
        async with running_trainer(settings):
            tasks = [TFNS, "banking77-intent"]
            await submit(
                settings, job(settings, "job-multi", tasks, [train_a, train_b], [hold_a, hold_b])
            )
            return await wait_for_outcome(settings, "job-multi")

    outcome = asyncio.run(go())
    for task in (TFNS, "banking77-intent"):
        for key in ("gate_new_accuracy", "gate_anchor_new_accuracy", "gate_anchor_live_accuracy"):
            assert f"{task}/lora/{key}" in outcome.metrics, (task, key, outcome.message)
    assert outcome.state == "finished"
    assert set(outcome.adapter_versions) == {TFNS, "banking77-intent"}


@pytest.mark.timeout(1300)  # the trainer's start (180 s) and stop (120 s), one outcome (900 s)
def test_the_fast_head_is_published_first_and_within_the_job(train_settings):
    """With the fast head on, the job publishes ``JOB-head`` (a new head on the live
    encoder's features) before any LoRA training, with the gate's evidence in its manifest."""
    settings = train_settings
    rows = crypto_rows()

    async def go():
        older = await write_labelled(
            settings, csv_rows(DATA / "tfns" / "train.csv")[::30][:200], TFNS, "o"
        )
        train = await write_labelled(settings, rows[:200], TFNS, "c")
        holdout = await write_labelled(settings, rows[200:300], TFNS, "h")
        async with running_trainer(settings):
            fast_job = job(settings, "job-fast", [TFNS], [train], [holdout])
            # Rehearsal of the old domain, as a drift job carries, keeps the anchor set safe.
            await submit(settings, fast_job.model_copy(update={"rehearsal_ranges": [older]}))
            outcome = await wait_for_outcome(settings, "job-fast")
        return outcome, await adapters_published(settings), await statuses(settings)

    outcome, live, events = asyncio.run(go())
    assert outcome.state == "finished", outcome.message
    assert live[0].version == "job-fast-head" and live[0].parent_version == "base"
    assert live[0].metrics["gate_p_value"] <= 0.05
    assert live[0].metrics["gate_new_accuracy"] > live[0].metrics["gate_live_accuracy"]
    # Its verdict is reported before the LoRA stage starts training.
    messages = [s.message or "" for s in events if s.state == "progress"]
    verdict = next(i for i, m in enumerate(messages) if "head: promoted job-fast-head" in m)
    first_epoch = next(i for i, m in enumerate(messages) if m.startswith("epoch "))
    assert verdict < first_epoch
    if len(live) > 1:  # the LoRA adapter replaced it only by winning against it
        assert live[1].version == "job-fast" and live[1].parent_version == "job-fast-head"


@pytest.mark.timeout(2200)  # the trainer's start (180 s) and stop (120 s), two outcomes (900 s)
def test_a_newer_drift_job_supersedes_an_older_job(train_settings):
    """A job whose data a newer drift made stale ends as ``superseded`` and publishes nothing;
    the drift job runs."""
    settings = train_settings
    rows = crypto_rows()

    async def go():
        train = await write_labelled(settings, rows[:150], TFNS, "c")
        holdout = await write_labelled(settings, rows[150:220], TFNS, "h")
        stale = job(settings, "job-stale", [TFNS], [train], [holdout])
        drift = job(settings, "job-drift", [TFNS], [train], [holdout]).model_copy(
            update={"reason": "drift", "created_ts_ms": stale.created_ts_ms + 1}
        )
        await submit(settings, stale)
        await submit(settings, drift)
        async with running_trainer(settings) as trainer:
            first = await wait_for_outcome(settings, "job-stale")
            second = await wait_for_outcome(settings, "job-drift")
            assert trainer.stats.superseded == 1
        return first, second, await adapters_published(settings)

    first, second, live = asyncio.run(go())
    assert first.state == "superseded" and "job-drift" in first.message
    assert first.adapter_versions == {}
    assert second.state in ("finished", "rejected")
    assert all(not a.version.startswith("job-stale") for a in live)
