"""Follow ``model-updates``: every replica reads it whole, outside any consumer group.

``catch_up()`` returns the newest live update per task present at start-up; ``poll()``
returns live updates as they arrive afterwards. Payloads are not yet verified: the caller
checks signature and hash before loading (``models.loader``). The follower checks manifest
signatures first: a manifest that does not verify is handed on as ``rejected`` without its
chunks ever being assembled or fetched, so a forged manifest costs nothing. A
signature-valid live manifest older than the newest one seen (the per-task sequence floor,
``sequence``) is handed on as ``stale``, never as a live update, so a replayed old manifest
cannot roll a consumer back. The floor is seeded from the signature-valid history records
(``TASK@VERSION``) as well, so it survives a restart: when compaction has dropped the live
record a replay superseded, ``catch_up`` serves the newest signed manifest, not the replay.

The model changes only by a signed act: a return to the seed model is a signed manifest
(``revert_to_base``, see ``records.revert_manifest``), and a tombstone on a task's key is
handed on as ``rejected`` (``unsigned``), counted in ``ignored_tombstones``, never as a revert.

Memory does not grow with the topic, although compaction keeps the chunks of every version
ever published (each has keys of its own): chunks wait in a bounded buffer only until their
manifest comes, and once a newer signed manifest of a task is seen, the buffered chunks of
its older published versions are dropped (a live record of one would be stale; a rollback
to one fetches its chunks again with a streaming scan, ``fetch_chunks``).

No record stops the follower: each one is handled on its own, and one that is malformed,
hostile or makes the handling raise is counted in ``rejected_records``, logged and skipped,
at start-up (``catch_up``) as afterwards (``poll``).
"""

from __future__ import annotations

import base64
import logging
from collections import OrderedDict
from collections.abc import Container
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
from streamtune.model_updates.records import (
    AdapterNotFound,
    chunk_key,
    decode_manifest,
    history_key,
)
from streamtune.model_updates.sequence import MAX_AHEAD_US, SequenceFloor, clock_us, plausible

log = logging.getLogger(__name__)

TOMBSTONE = (
    "a tombstone on the task's key is no signed rollback and is ignored "
    "(return to the seed model with `streamtune rollback TASK --to base`)"
)


@dataclass(frozen=True)
class Update:
    """A live manifest and its payload, as read from model-updates (not yet verified).

    A signed return to the seed model has a ``revert_to_base`` manifest and no payload
    (:attr:`reverts`). ``manifest`` is None only for a tombstone on the task's key, which
    comes ``rejected`` (``unsigned``): it is reported, and never reverts anything.
    """

    task: str
    manifest: AdapterManifest | None
    blob: bytes | None
    problem: str | None = None  # why the payload could not be assembled, or why it is stale
    stale: bool = False  # signed, but older than the newest live manifest: a replay
    rejected: AdapterRejected | None = None  # the signature does not verify: never loaded

    def rejection(self) -> AdapterRejected | None:
        """Why this update cannot be applied, or None when its payload is here to verify (or
        it is a signed return to the seed model)."""
        if self.rejected is not None:
            return self.rejected
        if self.manifest is None:
            return AdapterRejected("unsigned", self.problem or TOMBSTONE)
        if self.stale or (self.blob is None and not self.manifest.revert_to_base):
            return AdapterRejected(
                "stale" if self.stale else "malformed", self.problem or "no payload"
            )
        return None

    @property
    def reverts(self) -> bool:
        """A signature-valid, current manifest that returns the task to its seed model."""
        return (
            self.manifest is not None and self.manifest.revert_to_base and self.rejection() is None
        )


class _ChunkBuffer:
    """Chunks seen but not yet claimed by a manifest, within a byte budget (oldest out first).

    Chunks are published before their manifest, so the buffer cannot know an adapter's size
    yet: one (task, version) may hold at most ``version_budget_bytes``, the whole buffer
    ``budget_bytes``. A version over its cap is dropped; if its signed manifest comes, the
    chunks are fetched again by a scan capped at the manifest's size (``fetch_chunks``).

    >>> buf = _ChunkBuffer(budget_bytes=8, version_budget_bytes=4)
    >>> def chunk(version, index, data):
    ...     return AdapterChunk(task="tfns-sentiment", version=version, index=index, chunks=4,
    ...                         data_b64=base64.b64encode(data).decode())
    >>> buf.add(chunk("v1", 0, b"ab")); buf.add(chunk("v1", 1, b"cd")); buf.size
    4
    >>> buf.add(chunk("v1", 2, b"ef")); buf.size, ("tfns-sentiment", "v1") in buf.parts
    (0, False)
    """

    def __init__(self, budget_bytes: int, version_budget_bytes: int | None = None) -> None:
        self.budget = budget_bytes
        self.version_budget = version_budget_bytes or budget_bytes
        self.size = 0
        self.parts: OrderedDict[tuple[str, str], dict[int, bytes]] = OrderedDict()

    def add(self, chunk: AdapterChunk) -> None:
        data = chunk.data
        name = (chunk.task, chunk.version)
        parts = self.parts.setdefault(name, {})
        self.size += len(data) - len(parts.get(chunk.index, b""))
        parts[chunk.index] = data
        if sum(len(p) for p in parts.values()) > self.version_budget:
            log.warning(
                "dropping buffered chunks of %s/%s: over %d bytes", *name, self.version_budget
            )
            self._drop(name)
        while self.size > self.budget and len(self.parts) > 1:
            self._drop(next(iter(self.parts)))

    def drop_superseded(
        self, task: str, newest: str, published: Container[tuple[str, str]]
    ) -> None:
        """Drop the chunks of ``task``'s published versions other than ``newest``.

        Chunks of a version whose manifest has not come yet stay: it may be on its way.

        >>> buf = _ChunkBuffer(budget_bytes=64)
        >>> for v in ("v1", "v2", "v3"):
        ...     buf.add(AdapterChunk(task="tfns-sentiment", version=v, index=0, chunks=1,
        ...                          data_b64=base64.b64encode(b"ab").decode()))
        >>> published = {("tfns-sentiment", "v1"), ("tfns-sentiment", "v2")}
        >>> buf.drop_superseded("tfns-sentiment", "v2", published)
        >>> [version for _, version in buf.parts], buf.size
        (['v2', 'v3'], 4)
        """
        for name in [n for n in self.parts if n[0] == task and n[1] != newest]:
            if name in published:
                self._drop(name)

    def _drop(self, name: tuple[str, str]) -> dict[int, bytes]:
        dropped = self.parts.pop(name)
        self.size -= sum(len(p) for p in dropped.values())
        return dropped

    def take(self, manifest: AdapterManifest) -> bytes | None:
        """The adapter's bytes when every chunk is here and they add up to its signed size."""
        name = (manifest.task, manifest.version)
        parts = self.parts.get(name)
        if parts is None or any(i not in parts for i in range(manifest.chunks)):
            return None
        self._drop(name)
        blob = b"".join(parts[i] for i in range(manifest.chunks))
        return blob if len(blob) == manifest.size_bytes else None


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
        self.newest: dict[str, AdapterManifest] = {}  # the signed manifest at each floor
        #: (task, version) -> sha256 of every signed version seen published (history records
        #: and live ones): the trainer never publishes a version twice.
        self.published: dict[tuple[str, str], str] = {}
        self.stale_records = 0
        self.ignored_tombstones = 0
        self.tasks = set(tasks)
        self.topic = settings.topic(MODEL_UPDATES)
        self.buffer = _ChunkBuffer(buffer_bytes, version_budget_bytes=buffer_bytes // 4)
        self.consumer = make_consumer(
            settings,
            group_id=None,
            # One record of the largest size per fetch: enough, and memory stays a few MB.
            max_partition_fetch_bytes=limits.MAX_MODEL_UPDATE_BYTES + 64 * 1024,
            fetch_max_bytes=limits.MAX_MODEL_UPDATE_BYTES + 64 * 1024,
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
        replayed: set[str] = set()
        while any([await self.consumer.position(tp) < ends[tp] for tp in self.partitions]):
            for update in await self.poll(timeout_ms=200):
                # A replay, a forgery or a tombstone seen while catching up changes nothing:
                # the newest signed manifest before it stays the one to serve.
                if update.stale:
                    replayed.add(update.task)
                elif update.rejected is None:
                    latest[update.task] = update
        for task in replayed:
            await self._newest_instead(task, latest)
        return latest

    async def _newest_instead(self, task: str, latest: dict[str, Update]) -> None:
        """When a task's live record was a replay and compaction dropped the newer live record
        it superseded, serve the newest signed manifest (from history), not the seed model."""
        newest, current = self.newest.get(task), latest.get(task)
        live = current.manifest if current is not None else None
        if newest is None or (live is not None and live.sequence >= newest.sequence):
            return
        log.warning(
            "the live record of %s is a replay; serving the newest signed manifest, %s",
            task, newest.version,
        )  # fmt: skip
        latest[task] = await self._with_payload(task, newest)

    async def poll(self, timeout_ms: int = 500) -> list[Update]:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        updates: list[Update] = []
        for records in batch.values():
            for record in records:
                try:
                    update = await self._handle(record.key, record.value)
                except Exception as exc:  # one record never stops the follower
                    self.rejected_records += 1
                    log.warning(
                        "ignoring model-updates record %s[%d]@%d that could not be handled: %r",
                        record.topic, record.partition, record.offset, exc,
                    )  # fmt: skip
                    continue
                if update is not None:
                    updates.append(update)
        return updates

    async def _handle(self, key: bytes | None, value: bytes | None) -> Update | None:
        name = (key or b"").decode("utf-8", "replace")
        if value is None:
            if name not in self.tasks:
                return None
            # Unsigned, so never a rollback: reported, and the served model stays.
            self.ignored_tombstones += 1
            log.warning("ignoring a tombstone on %s: %s", name, TOMBSTONE)
            return Update(
                name, None, None, TOMBSTONE, rejected=AdapterRejected("unsigned", TOMBSTONE)
            )
        if "#" in name:
            try:
                chunk = AdapterChunk.from_bytes(value, max_bytes=limits.MAX_MODEL_UPDATE_BYTES)
            except DecodeError as exc:
                self.rejected_records += 1
                log.warning("ignoring malformed adapter chunk %s: %s", name, exc.reason)
                return None
            if chunk.task in self.tasks and name == chunk_key(
                chunk.task, chunk.version, chunk.index
            ):
                self.buffer.add(chunk)
            return None
        if "@" in name:
            if name.split("@", 1)[0] in self.tasks:
                self._seed_floor(name, value)
            return None
        manifest = decode_manifest(value)
        if isinstance(manifest, str):
            self.rejected_records += 1
            log.warning("ignoring malformed manifest under key %r: %s", name, manifest)
            return None
        if manifest.task != name or manifest.task not in self.tasks:
            return None
        try:  # before any chunk is assembled or fetched: a forgery costs nothing
            self.keyring.verify(manifest)
        except AdapterRejected as exc:
            self.rejected_records += 1
            return Update(name, manifest, None, exc.reason, rejected=exc)
        self.published.setdefault((manifest.task, manifest.version), manifest.sha256)
        stale = self._stale(manifest)
        if stale is not None:
            self.stale_records += 1
            log.warning("ignoring a replayed adapter manifest: %s", stale)
            return Update(name, manifest, None, stale, stale=True)
        return await self._with_payload(name, manifest)

    async def _with_payload(self, name: str, manifest: AdapterManifest) -> Update:
        """The update of a signature-valid manifest, with its payload assembled or fetched."""
        if manifest.revert_to_base:
            return Update(name, manifest, None)  # signed, and no payload to fetch
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
        """Why a signature-valid live manifest is a replay, or None. Only verified manifests
        reach here, so a forged one with a huge sequence cannot lock out the real ones."""
        if not plausible(manifest.sequence, clock_us()):
            # Signed, yet it would make every later manifest stale for years: refused.
            return (
                f"sequence {manifest.sequence} of {manifest.task}/{manifest.version} is more "
                f"than {MAX_AHEAD_US} µs ahead of this clock"
            )
        reason = self.floor.check(manifest.task, manifest.sequence, manifest.version)
        if reason is None:
            self._advance(manifest)
        return reason

    def _advance(self, manifest: AdapterManifest) -> None:
        """A signature-valid manifest is the task's newest: raise the floor, and drop the
        buffered chunks it supersedes."""
        self.floor.advance(manifest.task, manifest.sequence, manifest.version)
        self.newest[manifest.task] = manifest
        self.buffer.drop_superseded(manifest.task, manifest.version, self.published)

    def _seed_floor(self, name: str, value: bytes) -> None:
        """Raise the floor to a signature-valid history record (``TASK@VERSION``), so that
        replay protection survives a restart after compaction; forgeries are counted."""
        manifest = decode_manifest(value)
        if isinstance(manifest, str):
            self.rejected_records += 1
            log.warning("ignoring malformed history record %r: %s", name, manifest)
            return
        if name != history_key(manifest.task, manifest.version):
            return
        try:
            self.keyring.verify(manifest)
        except AdapterRejected as exc:
            self.rejected_records += 1
            log.warning("ignoring history record %r that does not verify: %s", name, exc)
            return
        self.published.setdefault((manifest.task, manifest.version), manifest.sha256)
        if not plausible(manifest.sequence, clock_us()):
            log.warning("ignoring history record %r: its sequence is far in the future", name)
        elif self.floor.check(manifest.task, manifest.sequence, manifest.version) is None:
            self._advance(manifest)
