"""Follow ``model-updates``: every replica reads it whole, outside any consumer group.

``catch_up()`` returns the newest live update per task present at start-up; ``poll()``
returns live updates as they arrive afterwards. Payloads are not yet verified: the caller
checks signature and hash before loading (``models.loader``). The follower checks manifest
signatures only to keep the per-task sequence floor (``sequence``): a signature-valid live
manifest older than the newest one seen is handed on as ``stale``, never as a live update,
so a replayed old manifest cannot roll a consumer back.
"""

from __future__ import annotations

import base64
import logging
from collections import OrderedDict
from dataclasses import dataclass

from models.errors import AdapterRejected
from models.signing import Keyring, load_keyring
from schemas import limits
from schemas.base import DecodeError
from schemas.messages import AdapterChunk, AdapterManifest
from schemas.topics import MODEL_UPDATES
from streamtune.core.clients import make_consumer
from streamtune.core.errors import StreamtuneError
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import topic_partitions
from streamtune.model_updates.history import fetch_chunks
from streamtune.model_updates.records import AdapterNotFound, decode_manifest
from streamtune.model_updates.sequence import SequenceFloor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Update:
    """A live manifest and its payload, as read from model-updates (not yet verified).

    ``manifest`` is None for a rollback to the base model (a tombstone on the task's key).
    """

    task: str
    manifest: AdapterManifest | None
    blob: bytes | None
    problem: str | None = None  # why the payload could not be assembled, or why it is stale
    stale: bool = False  # signed, but older than the newest live manifest: a replay


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
        self,
        settings: Settings,
        tasks: list[str],
        *,
        buffer_bytes: int = 64 * 1024 * 1024,
        keyring: Keyring | None = None,
    ) -> None:
        self.settings = settings
        self.keyring = keyring if keyring is not None else load_keyring(settings)
        self.floor = SequenceFloor()
        self.stale_records = 0
        self.tasks = set(tasks)
        self.topic = settings.topic(MODEL_UPDATES)
        self.buffer = _ChunkBuffer(buffer_bytes)
        self.consumer = make_consumer(
            settings,
            group_id=None,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        self.rejected_records = 0

    async def start(self) -> None:
        await self.consumer.start()
        self.partitions = await topic_partitions(self.consumer, self.topic)
        if not self.partitions:
            await self.consumer.stop()
            raise StreamtuneError(
                f"topic {self.topic} does not exist; run `streamtune topics create`"
            )
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
                if not update.stale:  # a replay seen while catching up changes nothing
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
        manifest = decode_manifest(value)
        if isinstance(manifest, str):
            self.rejected_records += 1
            log.warning("ignoring malformed manifest under key %r: %s", name, manifest)
            return None
        if manifest.task != name or manifest.task not in self.tasks:
            return None
        stale = self._stale(manifest)
        if stale is not None:
            self.stale_records += 1
            log.warning("ignoring a replayed adapter manifest: %s", stale)
            return Update(name, manifest, None, stale, stale=True)
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

    def _stale(self, manifest: AdapterManifest) -> str | None:
        """Why a live manifest is a replay, or None. Only a signature-valid manifest moves the
        floor: a forged one with a huge sequence cannot lock out the real ones."""
        try:
            self.keyring.verify(manifest)
        except AdapterRejected:
            return None  # the consumer rejects it on its own, with the reason
        reason = self.floor.check(manifest.task, manifest.sequence, manifest.version)
        if reason is None:
            self.floor.advance(manifest.task, manifest.sequence, manifest.version)
        return reason
