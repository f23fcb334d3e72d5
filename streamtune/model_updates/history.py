"""The history of a task's adapters on ``model-updates``, and rollback to one of them."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from models.signing import Signer, load_signer
from schemas import limits
from schemas.base import DecodeError
from schemas.fields import now_ms
from schemas.messages import SEED_VERSION, AdapterChunk, AdapterManifest
from schemas.topics import MODEL_UPDATES
from streamtune.core.clients import make_admin
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_topic
from streamtune.model_updates.publisher import event, publish_event
from streamtune.model_updates.records import (
    AdapterNotFound,
    chunk_key,
    decode_manifest,
    history_key,
)
from streamtune.model_updates.sequence import clock_us, next_sequence


async def _scan(settings: Settings) -> list[tuple[str, bytes | None]]:
    """Every (key, value) currently on model-updates, oldest first."""
    topic = settings.topic(MODEL_UPDATES)
    records = await read_topic(
        settings, topic, timeout_s=300, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    if not records and topic not in await _topics(settings):
        raise AdapterNotFound(f"topic {topic} does not exist")
    return [((r.key or b"").decode("utf-8", "replace"), r.value) for r in records]


async def _topics(settings: Settings) -> list[str]:
    admin = make_admin(settings)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def fetch_chunks(settings: Settings, manifest: AdapterManifest) -> bytes:
    """Reassemble a chunked adapter by scanning model-updates for its chunk keys.

    Call it for a manifest whose signature verified: its ``size_bytes`` caps what is kept,
    and a malformed chunk, or one of another adapter under a matching key, is skipped.
    """
    wanted = {chunk_key(manifest.task, manifest.version, i): i for i in range(manifest.chunks)}
    parts: dict[int, bytes] = {}
    size = 0
    for key, value in await _scan(settings):
        if key not in wanted or value is None:
            continue
        try:
            chunk = AdapterChunk.from_bytes(value, max_bytes=limits.MAX_MODEL_UPDATE_BYTES)
        except DecodeError:
            continue
        if (chunk.task, chunk.version, chunk.index) != (
            manifest.task,
            manifest.version,
            wanted[key],
        ):
            continue
        data = chunk.data
        size += len(data) - len(parts.get(chunk.index, b""))
        if size > manifest.size_bytes:
            raise AdapterNotFound(
                f"the chunks of {manifest.task}/{manifest.version} on the topic exceed its "
                f"signed size of {manifest.size_bytes} bytes"
            )
        parts[chunk.index] = data
    if len(parts) != manifest.chunks:
        raise AdapterNotFound(
            f"only {len(parts)} of {manifest.chunks} chunks of {manifest.task}/{manifest.version} are on the topic"
        )
    return b"".join(parts[i] for i in range(manifest.chunks))


async def history(
    settings: Settings, task: str
) -> tuple[list[AdapterManifest], AdapterManifest | None]:
    """(every published manifest of ``task`` oldest first, the live one).

    A live record older (by sequence) than one before it is a replay that consumers reject,
    so it does not count as live here either."""
    versions: dict[str, AdapterManifest] = {}
    live = None
    floor = 0
    for key, value in await _scan(settings):
        if key == task and value is None:
            live = None  # rolled back to base
            continue
        if "#" in key or value is None:
            continue
        manifest = decode_manifest(value)
        if isinstance(manifest, str) or manifest.task != task:
            continue
        if key == task:
            if manifest.sequence >= floor:
                live, floor = manifest, manifest.sequence
        elif key == history_key(task, manifest.version):
            versions.pop(manifest.version, None)  # re-insert: keep publication order
            versions[manifest.version] = manifest
    return list(versions.values()), live


async def rollback(
    producer: AIOKafkaProducer,
    settings: Settings,
    task: str,
    to_version: str | None,
    *,
    signer: Signer | None = None,
) -> AdapterManifest | None:
    """Make an earlier adapter live again (default: the live one's parent), on purpose.

    A rollback is a new signed act: the earlier manifest is signed anew (``signer``, default
    the trainer key from settings) with a sequence above every one published for the task,
    so consumers, which reject a live manifest older than the one they serve, accept it.
    Re-sending the old signed bytes would be rejected as a replay.

    Rolling back to ``base`` writes a tombstone on the task's key: consumers return to the
    seed model, and compaction eventually forgets the key. Returns the manifest made live
    (None for base).
    """
    published, live = await history(settings, task)
    if live is None:
        raise AdapterNotFound(
            f"task {task!r} has no live adapter on {settings.topic(MODEL_UPDATES)}"
        )
    target_version = to_version or live.parent_version or SEED_VERSION
    if target_version == SEED_VERSION:
        await producer.send_and_wait(settings.topic(MODEL_UPDATES), None, key=task.encode())
        return None
    by_version = {m.version: m for m in published}
    if target_version not in by_version:
        known = ", ".join(by_version) or "none"
        raise AdapterNotFound(
            f"no published version {target_version!r} of {task!r} (published: {known})"
        )
    signer = signer or load_signer(settings)
    highest = max([live.sequence, *(m.sequence for m in published)])
    created = now_ms()
    # The old blob (same version, sha256 and payload), a new sequence and signature.
    target = signer.sign(
        by_version[target_version].model_copy(
            update={"sequence": next_sequence(highest, clock_us()), "created_ts_ms": created}
        )
    )
    await producer.send_and_wait(
        settings.topic(MODEL_UPDATES), target.to_bytes(), key=task.encode()
    )
    await publish_event(
        producer, settings, event(task, target.version, "rolled_back", settings.client_id)
    )
    return target
