"""A small JSON Schema (draft 2020-12) checker for the keywords streamtune's exported schemas
use. ``jsonschema`` is not a dependency; this covers type, const, enum, pattern, lengths,
bounds, items, required, properties, anyOf, allOf/if/then, uniqueItems and local ``$ref``.

>>> schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 1}}}
>>> valid({"n": 2}, schema), valid({"n": 0}, schema), valid({}, schema), valid({"n": True}, schema)
(True, False, False, False)
"""

from __future__ import annotations

import math
import re
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    # JSON Schema counts 1.0 as an integer (a number with no fraction).
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and math.isfinite(v) and v.is_integer())
    ),
}


def valid(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> bool:
    """True when ``value`` satisfies ``schema``."""
    root = root if root is not None else schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        if not valid(value, root["$defs"][name], root):
            return False
    if "type" in schema and not _TYPES[schema["type"]](value):
        return False
    if "const" in schema and not _equal(value, schema["const"]):
        return False
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        return False
    if "anyOf" in schema and not any(valid(value, s, root) for s in schema["anyOf"]):
        return False
    for sub in schema.get("allOf", []):
        if not valid(value, sub, root):
            return False
    if (
        "if" in schema
        and "then" in schema
        and valid(value, schema["if"], root)
        and not valid(value, schema["then"], root)
    ):
        return False
    if isinstance(value, str) and not _string(value, schema):
        return False
    if _TYPES["number"](value) and not _number(value, schema):
        return False
    if isinstance(value, list) and not _array(value, schema, root):
        return False
    return not (isinstance(value, dict) and not _object(value, schema, root))


def _equal(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (
        _TYPES["number"](a) and _TYPES["number"](b) and a == b
    )


def _string(value: str, schema: dict[str, Any]) -> bool:
    if len(value) < schema.get("minLength", 0):
        return False
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return False
    return not ("pattern" in schema and re.search(schema["pattern"], value) is None)


def _number(value: float, schema: dict[str, Any]) -> bool:
    checks = (
        ("minimum", lambda lim: value >= lim),
        ("maximum", lambda lim: value <= lim),
        ("exclusiveMinimum", lambda lim: value > lim),
        ("exclusiveMaximum", lambda lim: value < lim),
    )
    return all(check(schema[key]) for key, check in checks if key in schema)


def _array(value: list[Any], schema: dict[str, Any], root: dict[str, Any]) -> bool:
    if len(value) < schema.get("minItems", 0):
        return False
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return False
    if schema.get("uniqueItems") and len({repr(v) for v in value}) != len(value):
        return False
    items = schema.get("items")
    return items is None or all(valid(v, items, root) for v in value)


def _object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> bool:
    if any(name not in value for name in schema.get("required", [])):
        return False
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        return False
    props = schema.get("properties", {})
    for name, sub in props.items():
        if name in value and not valid(value[name], sub, root):
            return False
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return all(valid(v, extra, root) for k, v in value.items() if k not in props)
    return not (extra is False and any(k not in props for k in value))
