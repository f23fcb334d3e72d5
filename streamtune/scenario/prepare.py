"""Everything a scenario run needs before the processes start: a signing key the processes
trust, the scenario's topics, and the task's bootstrap adapter live on them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from models.bootstrap import Bootstrap
from models.loader import LoadedBase
from models.signing import generate_keypair
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from streamtune.train import bootstrap


def ensure_signing_key(settings: Settings, keys_dir: Path | None = None) -> Settings:
    """Settings whose trainer key exists and is trusted (made in ``keys_dir`` if needed)."""
    key = settings.signing_key_file or (keys_dir or settings.keys_dir) / "trainer.key"
    trusted = settings.trusted_keys_dir or (keys_dir or settings.keys_dir) / "trusted"
    if not key.exists():
        private, public = generate_keypair(key.with_suffix(""))
        trusted.mkdir(parents=True, exist_ok=True)
        (trusted / public.name).write_bytes(public.read_bytes())
        key = private
    return Settings(
        **{**settings.model_dump(), "signing_key_file": key, "trusted_keys_dir": trusted}
    )


def prepare(
    settings: Settings, task: str, base: LoadedBase | None = None
) -> tuple[LoadedBase, Bootstrap]:
    """Create the topics and publish the task's bootstrap adapter (shipped, or trained once
    per machine)."""
    asyncio.run(create_topics(settings))
    base, result = bootstrap.build(settings, task, base, on_progress=bootstrap.progress_bar(task))
    asyncio.run(bootstrap.publish(settings, base, result))
    return base, result
