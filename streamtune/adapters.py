"""Adapters on Kafka: publish signed manifests (inline or chunked), follow them, roll back.

Records on the compacted ``model-updates`` topic, by key:

- ``TASK``: the live manifest of a task; compaction keeps the newest, so a late consumer
  finds the live adapter;
- ``TASK@VERSION``: every manifest ever published (the history that rollback uses);
- ``TASK@VERSION#I``: chunk I of an adapter too large for one record.

Chunks and the history record are written before the live record, so a consumer that sees
a live manifest can always find its payload.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import limits
from schemas.base import DecodeError
from schemas.fields import now_ms
from schemas.messages import AdapterChunk, AdapterEvent, AdapterManifest
from schemas.topics import MODEL_EVENTS, MODEL_UPDATES
from streamtune.errors import StreamtuneError
from streamtune.kafka.read import read_topic
from streamtune.settings import Settings

log = logging.getLogger(__name__)


class AdapterNotFound(StreamtuneError, LookupError):
    """No such adapter version (or no payload for it) on model-updates."""


def history_key(task: str, version: str) -> str:
    return f"{task}@{version}"


def chunk_key(task: str, version: str, index: int) -> str:
    return f"{task}@{version}#{index}"


def split_payload(
    manifest: AdapterManifest, blob: bytes, settings: Settings
) -> tuple[AdapterManifest, list[AdapterChunk]]:
    """Inline the blob when small, else cut it into chunks; returns the manifest to sign."""
    if len(blob) <= settings.adapter_inline_max_bytes:
        inline = manifest.model_copy(
            update={
                "transfer": "inline",
                "chunks": 1,
                "payload_b64": base64.b64encode(blob).decode(),
            }
        )
        return inline, []
    size = settings.adapter_chunk_bytes
    count = math.ceil(len(blob) / size)
    chunks = [
        AdapterChunk(
            task=manifest.task,
            version=manifest.version,
            index=i,
            chunks=count,
            data_b64=base64.b64encode(blob[i * size : (i + 1) * size]).decode(),
        )
        for i in range(count)
    ]
    return manifest.model_copy(
        update={"transfer": "chunked", "chunks": count, "payload_b64": None}
    ), chunks


async def publish_adapter(
    producer: AIOKafkaProducer,
    settings: Settings,
    signed: AdapterManifest,
    chunks: list[AdapterChunk],
) -> None:
    """Write chunks, the history record and the live record, waiting for every ack."""
    topic = settings.topic(MODEL_UPDATES)
    pending = [
        await producer.send(topic, c.to_bytes(), key=chunk_key(c.task, c.version, c.index).encode())
        for c in chunks
    ]
    await asyncio.gather(*pending)
    value = signed.to_bytes()
    await producer.send_and_wait(
        topic, value, key=history_key(signed.task, signed.version).encode()
    )
    await producer.send_and_wait(topic, value, key=signed.task.encode())


async def publish_event(
    producer: AIOKafkaProducer, settings: Settings, event: AdapterEvent
) -> None:
    await producer.send_and_wait(
        settings.topic(MODEL_EVENTS), event.to_bytes(), key=event.task.encode()
    )


def event(
    task: str,
    version: str,
    kind: str,
    source: str,
    error: str | None = None,
    reason: str | None = None,
) -> AdapterEvent:
    return AdapterEvent(
        task=task, version=version, kind=kind, source=source, error=error,
        reason=reason[:2048] if reason else None, ts_ms=now_ms(),
    )  # fmt: skip


@dataclass(frozen=True)
class Update:
    """A live manifest and its payload, as read from model-updates (not yet verified).

    ``manifest`` is None for a rollback to the base model (a tombstone on the task's key).
    """

    task: str
    manifest: AdapterManifest | None
    blob: bytes | None
    problem: str | None = None  # why the payload could not be assembled


def _decode_manifest(raw: bytes | None) -> AdapterManifest | str:
    try:
        return AdapterManifest.from_bytes(raw, max_bytes=limits.MAX_MODEL_UPDATE_BYTES)
    except DecodeError as exc:
        return exc.reason


class _ChunkBuffer:
    """Chunks seen but not yet claimed by a manifest, within a byte budget (oldest out first)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.size = 0
        self.parts: OrderedDict[tuple[str, str], dict[int, bytes]] = OrderedDict()

    def add(self, chunk: AdapterChunk) -> None:
        data = base64.b64decode(chunk.data_b64)
        parts = self.parts.setdefault((chunk.task, chunk.version), {})
        self.size += len(data) - len(parts.get(chunk.index, b""))
        parts[chunk.index] = data
        while self.size > self.budget and len(self.parts) > 1:
            _, dropped = self.parts.popitem(last=False)
            self.size -= sum(len(p) for p in dropped.values())

    def take(self, manifest: AdapterManifest) -> bytes | None:
        parts = self.parts.get((manifest.task, manifest.version))
        if (
            parts is None
            or len(parts) < manifest.chunks
            or any(i not in parts for i in range(manifest.chunks))
        ):
            return None
        del self.parts[(manifest.task, manifest.version)]
        self.size -= sum(len(p) for p in parts.values())
        return b"".join(parts[i] for i in range(manifest.chunks))


class UpdatesFollower:
    """Reads model-updates from the beginning, without a consumer group (every replica sees all).

    ``catch_up()`` returns the newest live update per task present at start-up; ``poll()``
    returns live updates as they arrive afterwards.
    """

    def __init__(
        self, settings: Settings, tasks: list[str], *, buffer_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.settings = settings
        self.tasks = set(tasks)
        self.topic = settings.topic(MODEL_UPDATES)
        self.buffer = _ChunkBuffer(buffer_bytes)
        self.consumer = AIOKafkaConsumer(
            **settings.kafka_client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        self.rejected_records = 0

    async def start(self) -> None:
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise StreamtuneError(
                f"topic {self.topic} does not exist; run `streamtune topics create`"
            )
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def catch_up(self) -> dict[str, Update]:
        """Read up to the end offsets as of now; the newest live update per served task."""
        ends = await self.consumer.end_offsets(self.partitions)
        latest: dict[str, Update] = {}
        while any([await self.consumer.position(tp) < ends[tp] for tp in self.partitions]):
            for update in await self.poll(timeout_ms=200):
                latest[update.task] = update
        return latest

    async def poll(self, timeout_ms: int = 500) -> list[Update]:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        updates: list[Update] = []
        for records in batch.values():
            for record in records:
                update = await self._handle(record.key, record.value)
                if update is not None:
                    updates.append(update)
        return updates

    async def _handle(self, key: bytes | None, value: bytes | None) -> Update | None:
        name = (key or b"").decode("utf-8", "replace")
        if value is None:
            # A tombstone on a task's key rolls it back to the base model.
            return Update(name, None, None) if name in self.tasks else None
        if "#" in name:
            try:
                chunk = AdapterChunk.from_bytes(value, max_bytes=limits.MAX_MODEL_UPDATE_BYTES)
            except DecodeError as exc:
                self.rejected_records += 1
                log.warning("ignoring malformed adapter chunk %s: %s", name, exc.reason)
                return None
            if chunk.task in self.tasks:
                self.buffer.add(chunk)
            return None
        if "@" in name:
            return None  # history, used by rollback only
        manifest = _decode_manifest(value)
        if isinstance(manifest, str):
            self.rejected_records += 1
            log.warning("ignoring malformed manifest under key %r: %s", name, manifest)
            return None
        if manifest.task != name or manifest.task not in self.tasks:
            return None
        if manifest.transfer == "inline":
            try:
                blob = base64.b64decode(manifest.payload_b64 or "", validate=True)
            except ValueError:
                return Update(name, manifest, None, "inline payload is not valid base64")
            return Update(name, manifest, blob)
        blob = self.buffer.take(manifest)
        if blob is None:  # chunks were read long ago (a rollback) or evicted: look them up
            try:
                blob = await fetch_chunks(self.settings, manifest)
            except AdapterNotFound as exc:
                return Update(name, manifest, None, str(exc))
        return Update(name, manifest, blob)


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
    from streamtune.kafka.clients import make_admin

    admin = make_admin(settings)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def fetch_chunks(settings: Settings, manifest: AdapterManifest) -> bytes:
    """Reassemble a chunked adapter by scanning model-updates for its chunk keys."""
    wanted = {chunk_key(manifest.task, manifest.version, i): i for i in range(manifest.chunks)}
    parts: dict[int, bytes] = {}
    for key, value in await _scan(settings):
        if key in wanted and value is not None:
            try:
                chunk = AdapterChunk.from_bytes(value, max_bytes=limits.MAX_MODEL_UPDATE_BYTES)
            except DecodeError:
                continue
            parts[wanted[key]] = base64.b64decode(chunk.data_b64)
    if len(parts) != manifest.chunks:
        raise AdapterNotFound(
            f"only {len(parts)} of {manifest.chunks} chunks of {manifest.task}/{manifest.version} are on the topic"
        )
    return b"".join(parts[i] for i in range(manifest.chunks))


async def history(
    settings: Settings, task: str
) -> tuple[list[AdapterManifest], AdapterManifest | None]:
    """(every published manifest of ``task`` oldest first, the live one)."""
    versions: dict[str, AdapterManifest] = {}
    live = None
    for key, value in await _scan(settings):
        if key == task and value is None:
            live = None  # rolled back to base
            continue
        if "#" in key or value is None:
            continue
        manifest = _decode_manifest(value)
        if isinstance(manifest, str) or manifest.task != task:
            continue
        if key == task:
            live = manifest
        elif key == history_key(task, manifest.version):
            versions.pop(manifest.version, None)  # re-insert: keep publication order
            versions[manifest.version] = manifest
    return list(versions.values()), live


BASE_VERSION = "base"


async def rollback(
    producer: AIOKafkaProducer, settings: Settings, task: str, to_version: str | None
) -> AdapterManifest | None:
    """Republish an earlier signed manifest as the live one (default: the live one's parent).

    Rolling back to ``base`` writes a tombstone on the task's key: consumers return to the
    seed model, and compaction eventually forgets the key. Returns the manifest made live
    (None for base).
    """
    published, live = await history(settings, task)
    if live is None:
        raise AdapterNotFound(
            f"task {task!r} has no live adapter on {settings.topic(MODEL_UPDATES)}"
        )
    target_version = to_version or live.parent_version or BASE_VERSION
    if target_version == BASE_VERSION:
        await producer.send_and_wait(settings.topic(MODEL_UPDATES), None, key=task.encode())
        return None
    by_version = {m.version: m for m in published}
    if target_version not in by_version:
        known = ", ".join(by_version) or "none"
        raise AdapterNotFound(
            f"no published version {target_version!r} of {task!r} (published: {known})"
        )
    target = by_version[target_version]
    # The same signed bytes: consumers verify it exactly as when it was first published.
    await producer.send_and_wait(
        settings.topic(MODEL_UPDATES), target.to_bytes(), key=task.encode()
    )
    return target


async def sign_and_publish(
    producer: AIOKafkaProducer,
    settings: Settings,
    signer: object,
    *,
    task: str,
    version: str,
    blob: bytes,
    base_model_id: str,
    num_labels: int,
    parent_version: str | None = None,
    metrics: dict[str, float] | None = None,
    library_versions: dict[str, str] | None = None,
    job_id: str | None = None,
) -> AdapterManifest:
    """Describe, sign and publish an adapter blob; returns the signed manifest."""
    import hashlib

    unsigned = AdapterManifest(
        task=task,
        version=version,
        parent_version=parent_version,
        base_model_id=base_model_id,
        num_labels=num_labels,
        sha256=hashlib.sha256(blob).hexdigest(),
        size_bytes=len(blob),
        metrics=metrics or {},
        created_ts_ms=now_ms(),
        key_id="-",
        signature_b64="-",
        transfer="chunked",
        chunks=1,
        library_versions=library_versions or {},
        job_id=job_id,
    )
    manifest, chunks = split_payload(unsigned, blob, settings)
    signed = signer.sign(manifest)  # type: ignore[attr-defined]
    await publish_adapter(producer, settings, signed, chunks)
    await publish_event(producer, settings, event(task, version, "published", settings.client_id))
    return signed
