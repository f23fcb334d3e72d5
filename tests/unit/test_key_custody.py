"""Only the trainer holds its private key (issue 24, item 11).

Before the fix, every serve replica in docker-compose.yml mounted the volume that holds
``trainer.key``, and ``LocalService`` handed ``STREAMTUNE_SIGNING_KEY`` and
``STREAMTUNE_SIGNING_KEY_FILE`` to the worker and serve children too: breaking into any
process was enough to sign an adapter.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import ClassVar

import pytest
import yaml

from streamtune import local_service
from streamtune.core.errors import StreamtuneError
from streamtune.core.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.security

SERVICES = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
SIGNING_VARIABLES = {"STREAMTUNE_SIGNING_KEY", "STREAMTUNE_SIGNING_KEY_FILE"}


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume of a compose service."""
    return [(v.split(":")[0], v.split(":")[1]) for v in service.get("volumes", [])]


def key_volume() -> str:
    """The volume that holds the file the trainer signs with (longest mount prefix)."""
    key = PurePosixPath(SERVICES["trainer"]["environment"]["STREAMTUNE_SIGNING_KEY_FILE"])
    holding = [
        (len(PurePosixPath(target).parts), source)
        for source, target in mounts(SERVICES["trainer"])
        if key.is_relative_to(target)
    ]
    assert holding, "the trainer's key file is on no volume"
    return max(holding)[1]


def test_compose_mounts_the_private_key_into_the_trainer_only():
    volume = key_volume()
    sees_key = {
        name
        for name, service in SERVICES.items()
        if any(source == volume for source, _ in mounts(service))
        or SIGNING_VARIABLES & set(service.get("environment", {}))
    }
    # `keys` is the one-shot service that generates the key pair.
    assert sees_key == {"keys", "trainer", "trainer-cpu"}, f"{volume!r} is mounted in {sees_key}"


def test_compose_serve_still_trusts_the_trainer_key():
    """Serve verifies adapters: it sees the trusted public keys, on a volume of their own."""
    volume = key_volume()
    for name in ("serve-1", "serve-2", "trainer", "trainer-cpu"):
        trusted = SERVICES[name]["environment"].get("STREAMTUNE_TRUSTED_KEYS_DIR", "/keys/trusted")
        assert any(
            target == trusted and source != volume for source, target in mounts(SERVICES[name])
        ), name
    generate = SERVICES["keys"]["command"][-1]
    assert "/keys/trusted/" in generate and ("trusted-keys", "/keys/trusted") in mounts(
        SERVICES["keys"]
    )


class RecordingChild:
    """Stands in for a child process: records the environment it would have started with."""

    started: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, role: str, env: dict[str, str], log) -> None:
        self.role = role
        RecordingChild.started[role] = dict(env)

    def alive(self) -> bool:
        return False  # so start() stops at once, after spawning all three

    def stop(self, timeout_s: float = 60.0) -> int:
        return 0

    def tail(self, lines: int = 30) -> str:
        return ""


@pytest.mark.parametrize("how", ["pem", "file"])
def test_local_service_gives_the_signing_key_to_train_only(tmp_path, monkeypatch, how):
    key_file = tmp_path / "trainer.key"
    key_file.write_text("-----BEGIN PRIVATE KEY-----\n")
    for name in ("SIGNING_KEY", "SIGNING_KEY_FILE"):  # from the parent's environment too
        monkeypatch.delenv(f"STREAMTUNE_{name}", raising=False)
    secret = {"signing_key": "PEM-OF-THE-TRAINER"} if how == "pem" else {}
    settings = Settings(signing_key_file=key_file, **secret)
    RecordingChild.started = {}
    monkeypatch.setattr(local_service, "Child", RecordingChild)

    with pytest.raises(StreamtuneError, match="exited during start-up"):
        local_service.LocalService(settings, tmp_path / "logs").start(timeout_s=5)

    started = RecordingChild.started
    assert set(started) == set(local_service.ROLES)
    assert started["train"]["STREAMTUNE_SIGNING_KEY_FILE"] == str(key_file)
    if how == "pem":
        assert started["train"]["STREAMTUNE_SIGNING_KEY"] == "PEM-OF-THE-TRAINER"
    for role in ("worker", "serve"):
        leaked = SIGNING_VARIABLES & set(started[role])
        assert not leaked, f"{role} was given {sorted(leaked)}"
        assert "PEM-OF-THE-TRAINER" not in started[role].values(), role
        # Everything else still reaches every child.
        assert started[role]["STREAMTUNE_BOOTSTRAP_SERVERS"] == settings.bootstrap_servers
