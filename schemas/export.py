"""Export JSON Schema for producers written in other languages."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas import limits
from schemas.messages import MESSAGE_TYPES
from schemas.tasks import get_task, known_tasks


def json_schemas() -> dict[str, dict]:
    """JSON Schema (draft 2020-12) of every message, by message name.

    Beyond pydantic's field types, the schemas say what the consumers check on the way in:
    the schema version, the known tasks, each task's label range, the earliest timestamp,
    that a text is not blank and that a job's tasks do not repeat. What JSON Schema cannot
    say (the clock-relative latest timestamp, the record size, sums and overlaps across
    fields) is listed in docs/operating.md (Reliability).

    >>> feedback = json_schemas()["Feedback"]
    >>> feedback["properties"]["task"]["enum"], feedback["properties"]["schema_version"]["const"]
    (['banking77-intent', 'tfns-sentiment'], 1)
    >>> feedback["allOf"][1]["then"]["properties"]["label"]
    {'maximum': 2}
    """
    out = {}
    for name, cls in MESSAGE_TYPES.items():
        schema = cls.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"streamtune/{name}/v{cls.SCHEMA_VERSION}"
        _tighten(schema)
        schema["properties"]["schema_version"]["const"] = cls.SCHEMA_VERSION
        _per_task_labels(schema)
        out[name] = schema
    return out


def _tighten(node: object) -> None:
    """Add the checks of streamtune's field types that pydantic's schema leaves out."""
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("pattern") == limits.TASK_PATTERN:
        node["enum"] = list(known_tasks())
    description = node.get("description", "")
    if node.get("type") == "integer" and description.startswith("Unix epoch milliseconds"):
        node["minimum"] = limits.MIN_TS_MS
    if node.get("type") == "string" and description == "the text to classify":
        node["pattern"] = r"\S"  # not blank: at least one non-whitespace character
    if node.get("type") == "array" and node.get("title") == "Tasks":
        node["uniqueItems"] = True
    for value in node.values():
        _tighten(value)


def _per_task_labels(schema: dict) -> None:
    """Label indices (and probability vectors, label counts) lie within the task's labels."""
    props = schema["properties"]
    if "task" not in props:
        return
    rules = []
    for task in known_tasks():
        n = get_task(task).num_labels
        then: dict[str, dict] = {}
        for field in ("label", "predicted_label"):
            if field in props:
                then[field] = {"maximum": n - 1}
        if "probs" in props:
            then["probs"] = {"minItems": n, "maxItems": n}
        if "num_labels" in props:
            then["num_labels"] = {"maximum": n}
        if then:
            rules.append(
                {
                    "if": {"properties": {"task": {"const": task}}, "required": ["task"]},
                    "then": {"properties": then},
                }
            )
    if rules:
        schema["allOf"] = rules


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
