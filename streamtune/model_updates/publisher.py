"""Publish a signed adapter on ``model-updates`` (chunks, history, live record) and its events."""

from __future__ import annotations

import asyncio
import hashlib

from aiokafka import AIOKafkaProducer

from schemas.fields import now_ms
from schemas.messages import AdapterChunk, AdapterEvent, AdapterManifest
from schemas.topics import MODEL_EVENTS, MODEL_UPDATES
from streamtune.core.settings import Settings
from streamtune.model_updates.records import chunk_key, history_key, split_payload
from streamtune.model_updates.sequence import clock_us, next_sequence


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
    previous_sequence: int = 0,
) -> AdapterManifest:
    """Describe, sign and publish an adapter blob; returns the signed manifest.

    Its ``sequence`` is the clock in µs, and above ``previous_sequence`` (the live one's)."""
    created = now_ms()
    unsigned = AdapterManifest(
        task=task,
        version=version,
        parent_version=parent_version,
        base_model_id=base_model_id,
        num_labels=num_labels,
        sha256=hashlib.sha256(blob).hexdigest(),
        size_bytes=len(blob),
        metrics=metrics or {},
        created_ts_ms=created,
        key_id="-",
        signature_b64="-",
        transfer="chunked",
        chunks=1,
        library_versions=library_versions or {},
        job_id=job_id,
        sequence=next_sequence(previous_sequence, clock_us()),
    )
    manifest, chunks = split_payload(unsigned, blob, settings)
    signed = signer.sign(manifest)  # type: ignore[attr-defined]
    await publish_adapter(producer, settings, signed, chunks)
    await publish_event(producer, settings, event(task, version, "published", settings.client_id))
    return signed
