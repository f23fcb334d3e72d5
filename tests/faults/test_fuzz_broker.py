"""Fuzz the real processes on the real broker: a large batch of hostile records on every topic
a consumer reads, interleaved with good records, while worker, serve and train run as child
processes.

Every record that the decode path rejects lands on dead-letter once per process that reads
it (serve and the worker both read interactions), with its source offset and a reason; no
process dies; every good interaction is answered and every good labelled pair is written
exactly once; duplicates are absorbed and conflicting feedback is dead-lettered by the join;
a good train job is taken up by the trainer.
"""

from __future__ import annotations

import asyncio
import collections

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from models.signing import generate_keypair
from schemas import limits
from schemas.codec import decode
from schemas.fields import now_ms
from schemas.messages import (
    AdapterChunk,
    AdapterManifest,
    DeadLetter,
    Feedback,
    Interaction,
    JobStatus,
    LabelledExample,
    OffsetRange,
    Prediction,
    TrainJob,
)
from schemas.topics import (
    DEAD_LETTER,
    FEEDBACK,
    INTERACTIONS,
    LABELLED,
    MODEL_UPDATES,
    PREDICTIONS,
    TRAIN_JOBS,
    TRAIN_STATUS,
)
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_topic
from streamtune.local_service import LocalService
from tests.faults.cases import TASK, Case, cases
from tests.faults.load import service_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

#: Fuzzed records per topic, and which model its consumers decode them as.
PLAN = {
    INTERACTIONS: (Interaction, 400),
    FEEDBACK: (Feedback, 300),
    PREDICTIONS: (Prediction, 300),
    TRAIN_JOBS: (TrainJob, 250),
    MODEL_UPDATES: (AdapterManifest, 150),
    "model-updates#chunks": (AdapterChunk, 150),
}
#: How many processes decode each topic (and so dead-letter each bad record).
READERS = {INTERACTIONS: 2, FEEDBACK: 1, PREDICTIONS: 1, TRAIN_JOBS: 1, MODEL_UPDATES: 1}
GOOD = 150
DECODE_ERRORS = {
    "empty", "too_large", "invalid_utf8", "invalid_json", "wrong_type", "validation",
    "unknown_task", "unsupported_version", "internal", "wrong_key",
}  # fmt: skip


def collect(model: type, count: int) -> list[Case]:
    found: list[Case] = []

    @settings(
        max_examples=count, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(cases(model))
    def gather(case: Case) -> None:
        found.append(case)

    gather()
    return found


def key_for(topic: str, model: type, raw: bytes) -> bytes:
    """The key the record would carry: a chunk's own key when it is valid, else a fixed one."""
    if model is AdapterChunk:
        try:
            chunk = AdapterChunk.from_bytes(raw, max_bytes=limits.MAX_MODEL_UPDATE_BYTES)
            return f"{chunk.task}@{chunk.version}#{chunk.index}".encode()
        except Exception:
            return f"{TASK}@fuzz#0".encode()
    if model is AdapterManifest:
        return TASK.encode()
    return b"fuzz"


def good_records(n: int) -> list[tuple[str, bytes, bytes]]:
    """Good interactions with feedback, some sent twice, some contradicted by a second label."""
    out = []
    ts = now_ms()
    for i in range(n):
        iid = f"good-{i}"
        itx = Interaction(interaction_id=iid, task=TASK, text=f"$ABC shares move {i}", ts_ms=ts)
        fb = Feedback(interaction_id=iid, task=TASK, label=i % 3, ts_ms=ts, source="fuzz")
        out += [
            (INTERACTIONS, iid.encode(), itx.to_bytes()),
            (FEEDBACK, iid.encode(), fb.to_bytes()),
        ]
        if i % 10 == 0:  # a duplicate interaction: absorbed by the join
            out.append((INTERACTIONS, iid.encode(), itx.to_bytes()))
        if i % 10 == 5:  # conflicting feedback: the first label wins, the second is dead-lettered
            wrong = Feedback(
                interaction_id=iid, task=TASK, label=(i + 1) % 3, ts_ms=ts, source="fuzz"
            )
            out.append((FEEDBACK, iid.encode(), wrong.to_bytes()))
    return out


# The service's start (300 s), the sends, the watch (420 s, then up to 4 reads of 60 s), the stop.
@pytest.mark.timeout(1300)
def test_every_consumer_survives_a_batch_of_hostile_records(topics: Settings, tmp_path):
    key, _ = generate_keypair(tmp_path / "keys" / "trusted" / "trainer")
    settings = service_settings(
        topics, key, tmp_path / "keys" / "trusted", train_max_attempts=1, join_ttl_s=3600.0
    )
    planned = {name: collect(model, count) for name, (model, count) in PLAN.items()}
    # A handful of 4 MB adapter records is plenty; each costs a broker write and four reads.
    huge_updates = 0
    for name in (MODEL_UPDATES, "model-updates#chunks"):
        kept = []
        for case in planned[name]:
            if len(case.raw) > limits.MAX_RECORD_BYTES:
                huge_updates += 1
                if huge_updates > 4:
                    continue
            kept.append(case)
        planned[name] = kept
    good = good_records(GOOD)
    good_job = TrainJob(
        job_id="fuzz-good-job", tasks=[TASK], reason="manual", labelled_topic=settings.topic(LABELLED),
        train_ranges=[OffsetRange(partition=0, start=10**6, end=10**6 + 50)],
        holdout_ranges=[OffsetRange(partition=0, start=10**6 + 50, end=10**6 + 60)],
        created_ts_ms=now_ms(),
    )  # fmt: skip

    async def send_all() -> dict[tuple[str, int, int], tuple[str, bytes]]:
        """Interleave good and hostile records; return where each hostile one landed."""
        producer = make_producer(
            settings, max_request_size=limits.MAX_MODEL_UPDATE_BYTES + 128 * 1024
        )
        await producer.start()
        sent: list[tuple[str, str, bytes, asyncio.Future]] = []
        try:
            queues = {name: list(items) for name, items in planned.items()}
            good_left = list(good)
            while any(queues.values()) or good_left:
                for name, items in queues.items():
                    if not items:
                        continue
                    case = items.pop()
                    model = PLAN[name][0]
                    topic = settings.topic(name.split("#")[0])
                    fut = await producer.send(topic, case.raw, key=key_for(name, model, case.raw))
                    sent.append((name, topic, case.raw, fut))
                for topic, k, raw in good_left[:3]:
                    await producer.send(settings.topic(topic), raw, key=k)
                del good_left[:3]
            await producer.send(
                settings.topic(TRAIN_JOBS), good_job.to_bytes(), key=good_job.key.encode()
            )
            await producer.flush()
            where = {}
            for name, topic, raw, fut in sent:
                meta = await fut
                where[(topic, meta.partition, meta.offset)] = (name, raw)
            return where
        finally:
            await producer.stop()

    async def watch(
        service: LocalService, expected: int
    ) -> tuple[list[DeadLetter], set[str], collections.Counter, list[JobStatus]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 420
        while True:
            service.check()  # no process died
            letters = [
                DeadLetter.from_bytes(r.value)
                for r in await read_topic(settings, settings.topic(DEAD_LETTER), timeout_s=60)
            ]
            answered = {
                Prediction.from_bytes(r.value).interaction_id
                for r in await read_topic(settings, settings.topic(PREDICTIONS), timeout_s=60)
                if _is(Prediction, r.value)
            }
            labelled = collections.Counter(
                LabelledExample.from_bytes(r.value).interaction_id
                for r in await read_topic(settings, settings.topic(LABELLED), timeout_s=60)
            )
            statuses = [
                JobStatus.from_bytes(r.value)
                for r in await read_topic(settings, settings.topic(TRAIN_STATUS), timeout_s=60)
            ]
            decode_level = [d for d in letters if d.error in DECODE_ERRORS]
            good_answered = {f"good-{i}" for i in range(GOOD)} <= answered
            good_labelled = all(labelled[f"good-{i}"] >= 1 for i in range(GOOD))
            job_seen = any(s.job_id == good_job.job_id for s in statuses)
            if (
                len(decode_level) >= expected and good_answered and good_labelled and job_seen
            ) or loop.time() > deadline:
                return letters, answered, labelled, statuses
            await asyncio.sleep(2.0)

    with LocalService(settings, tmp_path / "logs") as service:
        where = asyncio.run(send_all())
        bad = {spot: (name, raw) for spot, (name, raw) in where.items() if _bad(PLAN[name][0], raw)}
        expected = sum(READERS[spot[0].removeprefix(settings.topic_prefix)] for spot in bad)
        letters, answered, labelled, statuses = asyncio.run(watch(service, expected))
        service.check()

    tried = len(where)
    by_spot = collections.Counter(
        (d.source_topic, d.partition, d.offset) for d in letters if d.error in DECODE_ERRORS
    )
    print(
        f"\nfuzzed on the broker: {tried} hostile records ({len(bad)} bad by the decode path), "
        f"{len(good)} good records; dead letters {len(letters)} "
        f"({collections.Counter(d.error for d in letters)})"
    )
    for spot, (name, raw) in bad.items():
        readers = READERS[spot[0].removeprefix(settings.topic_prefix)]
        assert by_spot[spot] == readers, (name, spot, by_spot[spot], raw[:200])
    assert set(by_spot) <= set(bad), "a good record was dead-lettered"
    assert all(d.reason for d in letters)
    for i in range(GOOD):
        assert f"good-{i}" in answered
        assert labelled[f"good-{i}"] == 1, (i, labelled[f"good-{i}"])
    conflicts = [
        d
        for d in letters
        if d.error == "conflicting_feedback"
        and orjson.loads(d.raw)["interaction_id"].startswith("good-")
    ]
    assert len(conflicts) == GOOD // 10
    assert any(s.job_id == good_job.job_id for s in statuses), "the good job was not taken up"
    assert tried >= 1400


def _bad(model: type, raw: bytes) -> bool:
    """What the decode path says of a record (the verdict each consumer must act on)."""
    limit = limits.MAX_MODEL_UPDATE_BYTES + (64 * 1024 if model is AdapterManifest else 0)
    if model not in (AdapterManifest, AdapterChunk):
        limit = limits.MAX_RECORD_BYTES
    out = decode(model, raw, topic="t", partition=0, offset=0, max_bytes=limit)
    # A manifest of another task under this task's key is bad too.
    return isinstance(out, DeadLetter) or (isinstance(out, AdapterManifest) and out.task != TASK)


def _is(model: type, raw: bytes | None) -> bool:
    try:
        model.from_bytes(raw)
    except Exception:
        return False
    return True
