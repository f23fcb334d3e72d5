"""Each room keeps to its job: schemas imports nothing of ours, streams no torch, models no faust."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from schemas.export import export_json_schemas, json_schemas
from schemas.messages import MESSAGE_TYPES
from tests.conftest import REPO

FORBIDDEN = {
    "schemas": {
        "streamtune",
        "streams",
        "models",
        "torch",
        "transformers",
        "peft",
        "faust",
        "aiokafka",
    },
    "streams": {"torch", "transformers", "peft", "models"},
    "models": {"faust", "streams"},
}


def imported_roots(package: str) -> dict[str, set[str]]:
    out = {}
    for path in (REPO / package).rglob("*.py"):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = roots
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_boundaries(package):
    offenders = {f: roots & FORBIDDEN[package] for f, roots in imported_roots(package).items()}
    assert {f: r for f, r in offenders.items() if r} == {}


def test_json_schema_export(tmp_path):
    paths = export_json_schemas(tmp_path)
    assert {p.name for p in paths} == {f"{n}.schema.json" for n in MESSAGE_TYPES} | {"tasks.json"}
    schema = json_schemas()["Interaction"]
    assert set(schema["required"]) == {"interaction_id", "task", "text", "ts_ms"}
    assert schema["properties"]["text"]["maxLength"] == 4096
    assert Path(tmp_path / "tasks.json").read_text().count("card_arrival") == 1
