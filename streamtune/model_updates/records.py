"""Records on the compacted ``model-updates`` topic, by key, and how an adapter is cut into them.

- ``TASK``: the live manifest of a task; compaction keeps the newest, so a late consumer
  finds the live adapter;
- ``TASK@VERSION``: every manifest ever published (the history that rollback uses);
- ``TASK@VERSION#I``: chunk I of an adapter too large for one record.

A return to the seed model is a signed manifest too (``revert_to_base``, version ``base``,
see :func:`revert_manifest`), written as ``TASK@base`` and ``TASK``. A tombstone on ``TASK``
is no longer a rollback: consumers ignore it, because nobody signed it.

Chunks and the history record are written before the live record, so a consumer that sees
a live manifest can always find its payload.

>>> history_key("tfns-sentiment", "j1"), chunk_key("tfns-sentiment", "j1", 0)
('tfns-sentiment@j1', 'tfns-sentiment@j1#0')
"""

from __future__ import annotations

import base64
import hashlib
import math

from schemas import limits
from schemas.base import DecodeError
from schemas.fields import now_ms
from schemas.messages import SEED_VERSION, AdapterChunk, AdapterManifest
from streamtune.core.errors import StreamtuneError
from streamtune.core.settings import Settings


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


def decode_manifest(raw: bytes | None) -> AdapterManifest | str:
    try:
        return AdapterManifest.from_bytes(raw, max_bytes=limits.MAX_MODEL_UPDATE_BYTES)
    except DecodeError as exc:
        return exc.reason


def revert_manifest(live: AdapterManifest, sequence: int) -> AdapterManifest:
    """The unsigned manifest that returns ``live.task`` to its seed model; sign it, then publish
    it like an adapter (``TASK@base``, then ``TASK``). It names the version it replaces.

    >>> v1 = AdapterManifest(task="tfns-sentiment", version="v1", base_model_id="m",
    ...     num_labels=3, sha256="0" * 64, size_bytes=3, created_ts_ms=now_ms(), key_id="k",
    ...     signature_b64="s", transfer="inline", payload_b64="YWJj", sequence=5)
    >>> back = revert_manifest(v1, sequence=6)
    >>> back.version, back.parent_version, back.revert_to_base, back.size_bytes
    ('base', 'v1', True, 0)
    """
    parent = live.parent_version if live.revert_to_base else live.version
    return AdapterManifest(
        task=live.task, version=SEED_VERSION, parent_version=parent,
        base_model_id=live.base_model_id, num_labels=live.num_labels,
        sha256=hashlib.sha256(b"").hexdigest(), size_bytes=0, created_ts_ms=now_ms(),
        key_id="-", signature_b64="-", transfer="inline", payload_b64="",
        revert_to_base=True, sequence=sequence,
    )  # fmt: skip
