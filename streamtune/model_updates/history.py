"""The history of a task's adapters on ``model-updates``, and rollback to one of them.

These read the whole topic, which compaction does not keep small: every adapter version has
keys of its own (``TASK@VERSION`` and its chunks ``TASK@VERSION#I``), so the chunks of every
version ever published stay on it. The scans therefore stream (:func:`_scan`, one fetch at
a time) and keep only what they need: :func:`fetch_chunks` the chunks of one version (at
most its signed size), :func:`history` the verified manifests of one task (chunks are
skipped by key, never decoded). Memory is a few fetches plus that, whatever the topic holds.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaProducer

from models.errors import AdapterRejected
from models.signing import Keyring, Signer, load_keyring, load_signer, verify_blob
from schemas import limits
from schemas.base import DecodeError
from schemas.fields import now_ms
from schemas.messages import SEED_VERSION, AdapterChunk, AdapterManifest
from schemas.topics import MODEL_UPDATES
from streamtune.core.clients import make_admin
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import scan_topic
from streamtune.model_updates.publisher import event, publish_adapter, publish_event
from streamtune.model_updates.records import (
    AdapterNotFound,
    chunk_key,
    decode_manifest,
    history_key,
    revert_manifest,
)
from streamtune.model_updates.sequence import (
    MAX_AHEAD_US,
    SequenceFloor,
    clock_us,
    next_sequence,
    plausible,
)

log = logging.getLogger(__name__)


async def _scan(settings: Settings) -> AsyncIterator[tuple[str, bytes | None]]:
    """Every (key, value) currently on model-updates, oldest first, one at a time.

    A fetch holds at most about one record of the largest size per partition, so the scan's
    memory does not grow with the topic; the caller keeps what it needs.
    """
    topic = settings.topic(MODEL_UPDATES)
    empty = True
    records = scan_topic(
        settings,
        topic,
        timeout_s=300,
        max_partition_fetch_bytes=limits.MAX_MODEL_UPDATE_BYTES + 64 * 1024,
    )
    async with contextlib.aclosing(records):
        async for batch in records:
            for r in batch:
                empty = False
                yield (r.key or b"").decode("utf-8", "replace"), r.value
    if empty and topic not in await _topics(settings):
        raise AdapterNotFound(f"topic {topic} does not exist")


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
    records = _scan(settings)
    async with contextlib.aclosing(records):  # the consumer stops also when this raises
        async for key, value in records:
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
    settings: Settings, task: str, keyring: Keyring | None = None
) -> tuple[list[AdapterManifest], AdapterManifest | None]:
    """(every published adapter manifest of ``task`` oldest first, the live one).

    Only manifests a trusted key signed (``keyring``, default the trusted keys of
    ``settings``) with a plausible sequence count; anything else on the topic is someone
    else's record and is skipped. The live one is what consumers serve: the newest live
    record at or above the sequence floor (history records included), or the newest signed
    manifest when the last live record is a replay. It may be a ``revert_to_base`` manifest.
    """
    keyring = keyring if keyring is not None else load_keyring(settings)
    versions: dict[str, AdapterManifest] = {}
    floor = SequenceFloor()
    live: AdapterManifest | None = None
    newest: AdapterManifest | None = None
    now = clock_us()
    records = _scan(settings)
    async with contextlib.aclosing(records):  # the consumer stops also when this raises
        async for key, value in records:
            if (key != task and not key.startswith(f"{task}@")) or "#" in key or value is None:
                continue  # chunks, other tasks, and tombstones (never a rollback: not signed)
            manifest = _verified(key, value, keyring, now)
            if manifest is None or manifest.task != task:
                continue
            fresh = floor.check(task, manifest.sequence, manifest.version) is None
            if fresh:
                floor.advance(task, manifest.sequence, manifest.version)
                newest = manifest
            if key == task:
                live = manifest if fresh else newest
            elif key == history_key(task, manifest.version) and not manifest.revert_to_base:
                versions.pop(manifest.version, None)  # re-insert: keep publication order
                versions[manifest.version] = manifest
    return list(versions.values()), live


def _verified(key: str, value: bytes, keyring: Keyring, now_us: int) -> AdapterManifest | None:
    """The manifest in a record if a trusted key signed it with a plausible sequence."""
    manifest = decode_manifest(value)
    if isinstance(manifest, str):
        return None
    try:
        keyring.verify(manifest)
    except AdapterRejected as exc:
        log.warning("ignoring %s on model-updates: %s", key, exc)
        return None
    if not plausible(manifest.sequence, now_us):
        log.warning(
            "ignoring %s on model-updates: its sequence %d is more than %d µs ahead of the clock",
            key, manifest.sequence, MAX_AHEAD_US,
        )  # fmt: skip
        return None
    return manifest


async def verified_blob(settings: Settings, manifest: AdapterManifest, keyring: Keyring) -> bytes:
    """The adapter bytes of a manifest, checked (size, sha256, signature) before anyone signs
    it anew. Raises :class:`AdapterRejected` or :class:`AdapterNotFound`."""
    if manifest.transfer == "inline":
        try:
            blob = base64.b64decode(manifest.payload_b64 or "", validate=True)
        except ValueError:
            raise AdapterRejected("malformed", "inline payload is not valid base64") from None
    else:
        blob = await fetch_chunks(settings, manifest)
    verify_blob(manifest, blob, keyring)
    return blob


async def rollback(
    producer: AIOKafkaProducer,
    settings: Settings,
    task: str,
    to_version: str | None,
    *,
    signer: Signer | None = None,
    keyring: Keyring | None = None,
) -> AdapterManifest:
    """Make an earlier adapter live again (default: the live one's parent), on purpose.

    A rollback is a new signed act, and what it signs it has verified first: the earlier
    manifest must verify against the trusted keys (``keyring``, default from settings) and
    its blob against the manifest (size, sha256); it is then signed anew (``signer``,
    default the trainer key) with a sequence above every *verified* one of the task, so
    consumers, which reject a live manifest older than the one they serve, accept it.
    Re-sending the old signed bytes would be rejected as a replay.

    ``base`` (``SEED_VERSION``) signs a ``revert_to_base`` manifest: consumers return to
    the seed model. Either is written as a history record (``TASK@VERSION``), which keeps
    the new sequence floor after compaction, and as the live record. Returns the manifest
    made live.
    """
    keyring = keyring if keyring is not None else load_keyring(settings)
    published, live = await history(settings, task, keyring)
    if live is None:
        raise AdapterNotFound(
            f"task {task!r} has no live adapter on {settings.topic(MODEL_UPDATES)} signed by a "
            "trusted key"
        )
    # Only verified, plausible sequences count: a forged one near 2**62 changes nothing.
    sequence = next_sequence(max([live.sequence, *(m.sequence for m in published)]), clock_us())
    target_version = to_version or live.parent_version or SEED_VERSION
    if target_version == SEED_VERSION:
        unsigned = revert_manifest(live, sequence)
    else:
        by_version = {m.version: m for m in published}
        if target_version not in by_version:
            known = ", ".join(by_version) or "none"
            raise AdapterNotFound(
                f"no published version {target_version!r} of {task!r} signed by a trusted key "
                f"(published: {known})"
            )
        earlier = by_version[target_version]
        await verified_blob(settings, earlier, keyring)
        # The old blob (same version, sha256 and payload), a new sequence and signature.
        unsigned = earlier.model_copy(update={"sequence": sequence, "created_ts_ms": now_ms()})
    target = (signer or load_signer(settings)).sign(unsigned)
    await publish_adapter(producer, settings, target, [])  # history record, then live record
    await publish_event(
        producer, settings, event(task, target.version, "rolled_back", settings.client_id)
    )
    return target
