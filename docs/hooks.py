"""Build-time pieces of the docs site (mkdocs.yml names this file under ``hooks:``).

- The configuration reference (``docs/configuration.md``) is generated from the fields of
  ``streamtune.core.settings.Settings``: name, environment variable, type, default and the
  field's ``description``, grouped by the ``# --- Section ---`` comments of the class that
  defines each field. Nothing is written by hand, so a new setting appears by itself.
- The benchmark table (``docs/benchmarks.md``) is rendered from ``bench/results.json`` by
  ``streamtune.bench.results.render_table``, the code ``make bench`` uses.
- ``RestToMarkdown`` is a Griffe extension (mkdocs.yml lists it for mkdocstrings): the module
  docstrings are written for Python readers (reST roles, doctests, ``::`` literal blocks), and
  it turns those into Markdown so that ``::: streams.trigger`` renders them as they read.

Run ``python docs/hooks.py`` to print the generated reference.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from griffe import Extension, Object

REPO = Path(__file__).resolve().parents[1]


def _repo_on_path() -> None:
    """Make the checkout importable: mkdocs may run from a venv that does not install
    streamtune, and it restores ``sys.path`` after loading this file, so this runs per use."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


SETTINGS_BEGIN = "<!-- settings-reference:begin -->"
SETTINGS_END = "<!-- settings-reference:end -->"

_SECTION = re.compile(r"^\s*# -{2,}\s*(?P<title>.+?)\s*-*\s*$")
_FIELD = re.compile(r"^(?P<indent>\s+)(?P<name>[a-z_][a-z0-9_]*)\s*:")


@dataclass(frozen=True)
class SettingDoc:
    """One row of the configuration reference."""

    section: str
    name: str
    env: str
    type: str
    default: str
    description: str


def _sections_of(cls: type) -> dict[str, str]:
    """Field name -> the title of the ``# --- Title ---`` comment above it in ``cls``'s source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    section = ""
    body_indent: str | None = None
    for line in source.splitlines()[1:]:
        if match := _SECTION.match(line):
            section = match["title"]
        elif (match := _FIELD.match(line)) and body_indent in (None, match["indent"]):
            body_indent = match["indent"]
            out.setdefault(match["name"], section)
    return out


def _defining_class(model: type, name: str) -> type:
    for cls in model.__mro__:
        if name in vars(cls).get("__annotations__", {}):
            return cls
    return model


def _constraints(metadata: list[Any]) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}
    parts = []
    for item in metadata:
        for attr, word in words.items():
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{word} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def _type_name(annotation: Any) -> str:
    """A field's type as a reader of the environment meets it.

    >>> _type_name(typing.Literal["a", "b"] | None)
    '`a`, `b`'
    >>> _type_name(Path | None), _type_name(int), _type_name(bool)
    ('path', 'int', 'bool')
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_type_name(arg) for arg in args)
    names = {"SecretStr": "secret", "Path": "path", "str": "string"}
    name = getattr(annotation, "__name__", str(annotation))
    return names.get(name, name)


def _default(field: Any) -> str:
    """A field's default as the reference shows it.

    >>> from pydantic.fields import FieldInfo
    >>> [_default(FieldInfo.from_field(v)) for v in (None, "", True, 0.0007, REPO / "data")]
    ['unset', 'empty', '`true`', '`0.0007`', '`data/` in the repository']
    """
    from pydantic_core import PydanticUndefined

    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        if value.is_relative_to(REPO):
            return f"`{value.relative_to(REPO).as_posix()}/` in the repository"
        if value.is_relative_to(Path.home()):
            return f"`~/{value.relative_to(Path.home()).as_posix()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_docs(model: type | None = None, env_prefix: str | None = None) -> list[SettingDoc]:
    """Every setting of ``model`` (default: ``Settings``), in declaration order.

    Generic on purpose: fields may live on several classes (a ``Settings`` made of per-layer
    base classes), and a field whose type is itself a settings model is expanded, its
    variables named with the model's ``env_nested_delimiter``."""
    from pydantic import BaseModel

    _repo_on_path()
    if model is None:
        from streamtune.core.settings import Settings

        model = Settings
    config = getattr(model, "model_config", {})
    prefix = config.get("env_prefix", "") if env_prefix is None else env_prefix
    sections: dict[type, dict[str, str]] = {}
    rows = []
    for name, field in model.model_fields.items():
        cls = _defining_class(model, name)
        if cls not in sections:
            sections[cls] = _sections_of(cls)
        section = sections[cls].get(name) or (inspect.getdoc(cls) or cls.__name__).split("\n")[0]
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        env = alias if alias else prefix + name
        env = env if config.get("case_sensitive") else env.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            delimiter = config.get("env_nested_delimiter") or "__"
            rows += settings_docs(annotation, env_prefix=env + delimiter)
            continue
        kind = _type_name(annotation)
        limits = _constraints(field.metadata)
        rows.append(
            SettingDoc(
                section=section,
                name=name,
                env=env,
                type=f"{kind} ({limits})" if limits else kind,
                default=_default(field),
                description=field.description or "",
            )
        )
    return rows


def settings_reference() -> str:
    """The reference as Markdown: one table per section, in the order the code declares them."""
    groups: dict[str, list[SettingDoc]] = {}
    for row in settings_docs():
        groups.setdefault(row.section, []).append(row)
    out = []
    for section, rows in groups.items():
        title, _, lead = section.partition(": ")
        out += [f"## {title}", ""]
        if lead:
            out += [lead[0].upper() + lead[1:] + ".", ""]
        out += ["| variable | type | default | what it sets |", "|---|---|---|---|"]
        out += [
            f"| `{r.env}` | {_cell(r.type)} | {_cell(r.default)} | {_cell(r.description)} |"
            for r in rows
        ]
        out.append("")
    return "\n".join(out)


def _replace_between(markdown: str, begin: str, end: str, block: str) -> str:
    head, found, rest = markdown.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"no {begin!r} ... {end!r} block")
    return f"{head}{begin}\n{block}\n{end}{tail}"


def bench_table() -> str:
    """The benchmark table, rendered from ``bench/results.json`` as ``make bench`` renders it."""
    import orjson

    _repo_on_path()
    from streamtune.bench.results import RESULTS, render_table

    return render_table(orjson.loads(RESULTS.read_bytes()))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: fill the generated blocks of the page, if it has any."""
    _repo_on_path()
    from streamtune.bench.results import BEGIN, END

    if SETTINGS_BEGIN in markdown:
        markdown = _replace_between(markdown, SETTINGS_BEGIN, SETTINGS_END, settings_reference())
    if BEGIN in markdown:
        markdown = _replace_between(markdown, BEGIN, END, bench_table())
    return markdown


# --- Docstrings: reST to Markdown, for mkdocstrings -----------------------------------------

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")
_TERM = re.compile(r"^``[^`]+``(?: / ``[^`]+``)*$")


def rest_to_markdown(text: str) -> str:
    """A docstring written for Python readers, as Markdown: reST roles become code spans,
    doctests fenced ``pycon`` blocks, ``::`` a colon (its indented block is code either way),
    and a reST definition list (a ````term```` line over an indented body) a Markdown one.
    tests/unit/test_docs.py shows each case."""
    text = _ROLE.sub(r"``\1``", text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            if out and out[-1].strip():
                out.append("")
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out += [f"{indent}```", ""]
            continue
        if line.rstrip().endswith("::") and not line.rstrip().endswith(":::"):
            line = line.rstrip()[:-1]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _TERM.match(line) and nxt.startswith("    ") and nxt.strip():
            out.append(line)
            i += 1
            first = True
            while i < len(lines) and lines[i].startswith("    ") and lines[i].strip():
                out.append((":   " if first else "    ") + lines[i].strip())
                first = False
                i += 1
            out.append("")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RestToMarkdown(Extension):
    """Griffe extension: every docstring goes through ``rest_to_markdown`` before rendering."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rest_to_markdown(obj.docstring.value)


if __name__ == "__main__":
    print(settings_reference())
