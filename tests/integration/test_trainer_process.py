"""`streamtune train` as a real process, killed with SIGKILL in the middle of a job: the job
was not committed, so the restarted trainer runs it again, to exactly one outcome."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from schemas.topics import TRAIN_JOBS
from streamtune.core.settings import Settings
from tests.conftest import DATA
from tests.kafka_helpers import committed
from tests.trainer_helpers import csv_rows, job, statuses, submit, wait_for_outcome, write_labelled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TFNS = "tfns-sentiment"


def start_trainer(settings: Settings, key_file) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "STREAMTUNE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMTUNE_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMTUNE_SIGNING_KEY_FILE": str(key_file),
        "STREAMTUNE_TRAIN_GROUP_ID": settings.train_group_id,
        "STREAMTUNE_TRAIN_LORA_R": "4",
        "STREAMTUNE_TRAIN_LORA_TARGETS": "query,value",
        "STREAMTUNE_TRAIN_EPOCHS": "2",
        "STREAMTUNE_TRAIN_MAX_LENGTH": "48",
        "STREAMTUNE_TRAIN_VALIDATION_FRACTION": "0",
        "STREAMTUNE_GATE_ANCHOR_SIZE": "100",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtune.cli", "train"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("training:"):
            return proc
    raise AssertionError(f"trainer did not start (exit {proc.wait()})")


# Two trainer starts, training's start (180 s), the rerun's outcome (300 s), the stop (60 s).
@pytest.mark.timeout(900)
def test_trainer_killed_mid_job_reruns_it_after_restart(topics: Settings, tmp_path):
    from models.signing import generate_keypair

    key, _ = generate_keypair(tmp_path / "trainer")
    settings = Settings(**{**topics.model_dump(), "train_group_id": f"{topics.topic_prefix}train"})
    rows = csv_rows(DATA / "tfns" / "train.csv")[::10][:800]

    async def prepare():
        train = await write_labelled(settings, rows[:700], TFNS, "k")
        holdout = await write_labelled(settings, rows[700:], TFNS, "kh")
        await submit(settings, job(settings, "job-kill", [TFNS], [train], [holdout]))

    asyncio.run(prepare())
    first = start_trainer(settings, key)
    deadline = time.monotonic() + 180
    while not any(
        s.state == "progress" and "epoch" in (s.message or "")
        for s in asyncio.run(statuses(settings))
    ):
        assert time.monotonic() < deadline and first.poll() is None, "training never started"
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert asyncio.run(
        committed(settings, settings.train_group_id, settings.topic(TRAIN_JOBS))
    ) in ({}, {0: 0})

    second = start_trainer(settings, key)
    try:
        outcome = asyncio.run(wait_for_outcome(settings, "job-kill", timeout_s=300))
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    events = asyncio.run(statuses(settings))
    sources = {s.source for s in events if s.state == "started"}
    assert len(sources) == 2  # started by the killed trainer, and again by its successor
    assert [s.state for s in events if s.state in ("finished", "rejected", "failed")] == [
        outcome.state
    ]
    assert outcome.state in ("finished", "rejected")
    assert asyncio.run(
        committed(settings, settings.train_group_id, settings.topic(TRAIN_JOBS))
    ) == {0: 1}
