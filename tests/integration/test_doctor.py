"""``streamtune doctor`` through the real CLI: no broker, a setup without the bootstrap
adapter, and a setup where everything is present.

Building the real bootstrap adapter takes a quarter of an hour, so the complete setup stands
a small adapter, trained on 96 seed examples, in for it: written where ``streamtune
bootstrap`` caches the current recipe's adapter (``streamtune.train.bootstrap.locate``, the
function the bootstrap itself uses) and published, signed, under that version. Doctor checks
that the file is there and readable and that this version is live; how well it predicts is
the bootstrap's own gate's business.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from models.signing import Signer, generate_keypair
from schemas.topics import MODEL_UPDATES
from streamtune.core.settings import Settings
from tests.conftest import REPO, free_port

TASK = "tfns-sentiment"


def doctor(env: dict[str, str], timeout_s: float = 300) -> tuple[int, list[str]]:
    """``streamtune doctor`` with only ``env``'s STREAMTUNE_* settings: exit code, lines."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTUNE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "streamtune.cli", "doctor"],
        env={**clean, **env}, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr and "Unclosed" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout.splitlines()


def line_of(lines: list[str], check: str) -> str:
    found = [line for line in lines if line[6:].startswith(f"{check} ")]
    assert len(found) == 1, (check, lines)
    return found[0]


def env_of(settings: Settings, cache: Path) -> dict[str, str]:
    return {
        "STREAMTUNE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMTUNE_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMTUNE_CACHE_DIR": str(cache),
    }


def with_keys(cache: Path) -> Signer:
    """What `streamtune keys generate --trust` leaves in ``cache``."""
    private, public = generate_keypair(cache / "keys" / "trainer")
    (cache / "keys" / "trusted").mkdir(parents=True)
    (cache / "keys" / "trusted" / public.name).write_bytes(public.read_bytes())
    return Signer.from_pem(private.read_bytes())


def test_no_broker_names_the_broker_and_its_fix(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: the local broker is not started
    code, lines = doctor(
        {"STREAMTUNE_KAFKA_PORT": str(port), "STREAMTUNE_CACHE_DIR": str(tmp_path)}
    )
    assert code == 2, lines
    broker = line_of(lines, "broker")
    assert broker.startswith("FAIL") and f"127.0.0.1:{port}" in broker, broker
    assert "`make kafka-start`" in broker, broker
    assert line_of(lines, "topics").startswith("skip")
    assert line_of(lines, "python").startswith("ok")
    assert line_of(lines, "acls").startswith("ok") and "not in use" in line_of(lines, "acls")
    key = line_of(lines, "signing key")
    assert key.startswith("FAIL") and "`streamtune keys generate --trust`" in key, key
    assert lines[-1].startswith("doctor: ")


@pytest.mark.integration
def test_without_the_bootstrap_adapter_it_names_the_bootstrap(
    topics: Settings, tmp_path: Path
) -> None:
    with_keys(tmp_path)
    code, lines = doctor(env_of(topics, tmp_path))
    assert code == 2, lines
    for check in ("broker", "topics", "signing key", "keyring", "cache", "device", "precision"):
        assert line_of(lines, check).startswith("ok"), lines
    assert "precision" in line_of(lines, "precision") and "fp32" in line_of(lines, "precision")
    bootstrap = line_of(lines, "bootstrap")  # an empty cache: the shipped adapter will do
    assert bootstrap.startswith("ok") and "ships with streamtune" in bootstrap, bootstrap
    live = line_of(lines, "live")
    assert live.startswith("FAIL") and f"streamtune bootstrap {TASK}" in live, live
    # Another recipe: nothing shipped or cached matches it, so it must be trained.
    code, lines = doctor({**env_of(topics, tmp_path), "STREAMTUNE_BOOTSTRAP_EPOCHS": "4"})
    assert code == 2, lines
    bootstrap = line_of(lines, "bootstrap")
    assert bootstrap.startswith("FAIL") and TASK in bootstrap, bootstrap
    assert f"`streamtune bootstrap {TASK} --topic-prefix {topics.topic_prefix}`" in bootstrap
    live = line_of(lines, "live")
    assert live.startswith("FAIL") and f"streamtune bootstrap {TASK}" in live, live
    assert topics.topic(MODEL_UPDATES) in live


@pytest.mark.integration
def test_a_complete_setup_passes(topics: Settings, tmp_path: Path) -> None:
    from models.base_encoder import load_encoder, locate_base_model
    from streamtune.train.bootstrap import locate
    from tests.serve_helpers import publish, trained_blob

    signer = with_keys(tmp_path)
    settings = Settings(**{**topics.model_dump(), "cache_dir": tmp_path})
    encoder = load_encoder(locate_base_model(settings.base_model).path)
    version, path = locate(settings, TASK, encoder)
    path.parent.mkdir(parents=True)
    path.write_bytes(trained_blob(0))
    path.with_suffix(".json").write_bytes(orjson.dumps({"gate_new_accuracy": 0.8}))
    asyncio.run(publish(settings, signer, version, path.read_bytes()))

    code, lines = doctor(env_of(topics, tmp_path))
    assert code == 0, lines
    assert not [line for line in lines if line.startswith(("FAIL", "skip"))], lines
    assert version in line_of(lines, "bootstrap") and "cached" in line_of(lines, "bootstrap")
    assert f"{version} (the bootstrap) is live" in line_of(lines, "live")
    assert lines[-1].startswith("doctor: all "), lines
