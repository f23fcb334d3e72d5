"""Export JSON Schema for producers written in other languages."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.messages import MESSAGE_TYPES
from schemas.tasks import get_task, known_tasks


def json_schemas() -> dict[str, dict]:
    """JSON Schema (draft 2020-12) of every message, by message name."""
    out = {}
    for name, cls in MESSAGE_TYPES.items():
        schema = cls.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"streamtune/{name}/v{cls.SCHEMA_VERSION}"
        out[name] = schema
    return out


def export_json_schemas(directory: Path) -> list[Path]:
    """Write one ``<Message>.schema.json`` per message plus ``tasks.json``; return the paths.

    >>> import tempfile
    >>> paths = export_json_schemas(Path(tempfile.mkdtemp()))
    >>> sorted(p.name for p in paths)[:3]
    ['AdapterChunk.schema.json', 'AdapterEvent.schema.json', 'AdapterManifest.schema.json']
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    tasks = {name: list(get_task(name).labels) for name in known_tasks()}
    path = directory / "tasks.json"
    path.write_bytes(orjson.dumps(tasks, option=orjson.OPT_INDENT_2))
    written.append(path)
    return written
