"""Records on the compacted ``model-updates`` topic, by key, and how an adapter is cut into them.

- ``TASK``: the live manifest of a task; compaction keeps the newest, so a late consumer
  finds the live adapter;
- ``TASK@VERSION``: every manifest ever published (the history that rollback uses);
- ``TASK@VERSION#I``: chunk I of an adapter too large for one record.

Chunks and the history record are written before the live record, so a consumer that sees
a live manifest can always find its payload.

>>> history_key("tfns-sentiment", "j1"), chunk_key("tfns-sentiment", "j1", 0)
('tfns-sentiment@j1', 'tfns-sentiment@j1#0')
"""

from __future__ import annotations

import base64
import math

from schemas import limits
from schemas.base import DecodeError
from schemas.messages import AdapterChunk, AdapterManifest
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
