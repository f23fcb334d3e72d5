"""The producer client stays light: importing it loads neither torch nor Faust, and the
``[client]`` extra (like the base install) asks for nothing heavier than its four packages."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.conftest import REPO

HEAVY = (
    "torch", "transformers", "peft", "safetensors", "faust", "mode", "river", "aiohttp",
    "prometheus_client", "cryptography", "tqdm", "numpy", "plotly", "matplotlib", "yaml",
)  # fmt: skip
CLIENT_PACKAGES = {"aiokafka", "orjson", "pydantic", "pydantic-settings"}


def test_importing_the_client_loads_neither_torch_nor_faust():
    code = (
        "import sys, streamtune.client\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"streamtune.client loads {proc.stdout.strip()}"


def _name(requirement: str) -> str:
    for stop in "<>=![; ~":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower()


def test_the_client_extra_and_the_base_install_carry_only_the_client_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["client"]} == CLIENT_PACKAGES
    assert {_name(r) for r in project["dependencies"]} <= CLIENT_PACKAGES
    for service in ("worker", "serve", "train", "monitor"):
        assert service in extras, f"no [{service}] extra"
    assert "torch" in {_name(r) for r in extras["serve"]}
    assert extras["all"] == ["streamtune[client,worker,serve,train,monitor]"]
    faust = [r for r in extras["worker"] if _name(r) == "faust-streaming"]
    assert faust and "==" in faust[0], "faust-streaming is pinned to the checked version"
