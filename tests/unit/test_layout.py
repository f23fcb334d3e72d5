"""Each room keeps to its job, and imports run one way:

    schemas  <-  streamtune.core  <-  {streams, models}  <-  the processes (streamtune.*)

``schemas`` imports nothing of ours; ``streams`` never imports torch, ``models`` never faust;
no library imports a process, and product code never imports benchmark code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from schemas.export import export_json_schemas, json_schemas
from schemas.messages import MESSAGE_TYPES
from tests.conftest import REPO

OURS = ("schemas", "streamtune", "streams", "models")
ML = ("torch", "transformers", "peft", "safetensors")
STREAMING = ("faust", "mode")

#: room -> (modules of ours it may import, third-party roots it must not import)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "schemas": (("schemas",), (*ML, *STREAMING, "aiokafka")),
    "streamtune.core": (("schemas", "streamtune.core"), (*ML, *STREAMING)),
    # The producer client: what an event producer installs (`streamtune[client]`).
    "streamtune.client": (("schemas", "streamtune.core", "streamtune.client"), (*ML, *STREAMING)),
    "streams": (("schemas", "streamtune.core", "streams"), ML),
    "models": (("schemas", "streamtune.core", "models"), (*STREAMING, "aiokafka")),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            out.add(module)
            out |= {f"{module}.{alias.name}" for alias in node.names}
    return out


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules_under(prefix: str) -> dict[str, set[str]]:
    root = REPO.joinpath(*prefix.split("."))
    return {module_name(p): imports_of(p) for p in sorted(root.rglob("*.py"))}


def wrong_way(prefix: str) -> dict[str, set[str]]:
    allowed, forbidden = RULES[prefix]
    offenders = {}
    for module, imported in modules_under(prefix).items():
        bad = {
            m
            for m in imported
            if (within(m, OURS) and not within(m, allowed)) or within(m, forbidden)
        }
        # `from streamtune.core import settings` names a module, not a wrong-way import.
        bad = {m for m in bad if not within(m, allowed)}
        if bad:
            offenders[module] = bad
    return offenders


@pytest.mark.parametrize("room", sorted(RULES))
def test_imports_run_one_way(room):
    assert wrong_way(room) == {}


def test_the_check_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """The rule above fails on a library that imports a process (here, written on the fly)."""
    fake = tmp_path / "streams"
    fake.mkdir()
    (fake / "bad.py").write_text("from streamtune.serve import Server\nimport torch\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert wrong_way("streams") == {
        "streams.bad": {"streamtune.serve", "streamtune.serve.Server", "torch"}
    }


def test_product_code_never_imports_benchmarks():
    offenders = {
        module: {m for m in imported if within(m, ("streamtune.bench",))}
        for prefix in ("streamtune", "streams", "models", "schemas")
        for module, imported in modules_under(prefix).items()
        if not within(module, ("streamtune.bench",))
    }
    assert {m: b for m, b in offenders.items() if b} == {}


def test_command_modules_import_no_other_command_module():
    """``streamtune.cli.<group>`` modules share only ``options``; no cycle can form."""
    shared = ("streamtune.cli.options",)
    offenders = {}
    for module, imported in modules_under("streamtune.cli").items():
        if module in ("streamtune.cli", "streamtune.cli.__main__", *shared):
            continue
        bad = {
            m
            for m in imported
            if within(m, ("streamtune.cli",)) and not within(m, shared) and m != "streamtune.cli"
        }
        if bad:
            offenders[module] = bad
    assert offenders == {}


def test_json_schema_export(tmp_path):
    paths = export_json_schemas(tmp_path)
    assert {p.name for p in paths} == {f"{n}.schema.json" for n in MESSAGE_TYPES} | {"tasks.json"}
    schema = json_schemas()["Interaction"]
    assert set(schema["required"]) == {"interaction_id", "task", "text", "ts_ms"}
    assert schema["properties"]["text"]["maxLength"] == 4096
    assert Path(tmp_path / "tasks.json").read_text().count("card_arrival") == 1
