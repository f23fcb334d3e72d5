"""Rows of a CSV or JSONL file, ready to replay: text, label index and entity per line.

The shared data sets work as they are: the text and label columns are found by name
(``text``/``label``, ``category``, ``Tweet Text``/``Sentiment``, ...), labels may be
indices or names, and ``--label-map Positive=Bullish`` maps foreign label names. A row that
cannot be used comes out as a :class:`BadRow` with its line and the reason.

>>> rows = list(read_rows(Path("data/tfns/valid.csv"), "tfns-sentiment", limit=2))
>>> rows[0].line, rows[0].label, rows[0].entity
(2, 0, '$ALLY')
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from schemas.tasks import TaskSpec, get_task
from streamtune.core.errors import ConfigError

TEXT_COLUMNS = ("text", "Text", "Tweet Text", "Comment Text", "sentence", "headline")
LABEL_COLUMNS = ("label", "Label", "category", "Sentiment", "sentiment", "intent")
ENTITY_COLUMNS = ("entity", "Stock Ticker", "ticker")
CASHTAG = re.compile(r"\$[A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?\b")
ENTITY = re.compile(r"[A-Za-z0-9$][A-Za-z0-9$._\-]{0,31}")


@dataclass(frozen=True)
class ReplayRow:
    """One good row: its line number in the file, the text, label index and entity."""

    line: int
    text: str
    label: int | None
    entity: str | None


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def parse_label_map(spec: str | None) -> dict[str, str]:
    """``"Positive=Bullish,Negative=Bearish"`` -> ``{"Positive": "Bullish", ...}``."""
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ConfigError(f"--label-map entry {part!r} is not FROM=TO")
        src, dst = part.split("=", 1)
        out[src.strip()] = dst.strip()
    return out


def _records(path: Path) -> Iterator[tuple[int, dict[str, object] | None, str | None]]:
    """(line, record, error) for each record of a CSV or JSONL file."""
    if path.suffix in (".jsonl", ".ndjson"):
        with path.open("rb") as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    yield line, None, f"invalid JSON: {exc}"
                    continue
                if isinstance(obj, dict):
                    yield line, obj, None
                else:
                    yield line, None, f"expected a JSON object, got {type(obj).__name__}"
        return
    with path.open("r", encoding="utf-8", errors="strict", newline="") as handle:
        reader = csv.DictReader(handle)
        line = 1
        try:
            for record in reader:
                start = line + 1
                line = reader.line_num
                if None in record:  # more fields than the header
                    yield (
                        start,
                        None,
                        f"{len(record) - 1 + len(record[None])} fields, header has {len(reader.fieldnames or [])}",
                    )
                    continue
                yield start, record, None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text (after line {line}): {exc}") from None


def _pick(columns: tuple[str, ...], record: dict[str, object], explicit: str | None) -> str | None:
    if explicit is not None:
        return explicit
    return next((c for c in columns if c in record), None)


def _label_index(raw: object, spec: TaskSpec, label_map: dict[str, str]) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"label {raw!r} is not an index or a label name")
    if isinstance(raw, int):
        index = raw
    else:
        text = str(raw).strip()
        text = label_map.get(text, text)
        index = int(text) if text.lstrip("-").isdigit() else spec.label_index(text)
    if not 0 <= index < spec.num_labels:
        raise ValueError(
            f"label {index} is out of range for task {spec.name!r} (0..{spec.num_labels - 1})"
        )
    return index


def read_rows(
    path: Path,
    task: str,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    entity_column: str | None = None,
    label_map: dict[str, str] | None = None,
    limit: int | None = None,
) -> Iterator[ReplayRow | BadRow]:
    """Read ``path`` into rows; bad rows come out as :class:`BadRow` with a reason."""
    spec = get_task(task)
    label_map = label_map or {}
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    produced = 0
    for line, record, error in _records(path):
        if limit is not None and produced >= limit:
            return
        produced += 1
        if record is None:
            yield BadRow(line, error or "unreadable")
            continue
        tcol = _pick(TEXT_COLUMNS, record, text_column)
        if tcol is None or tcol not in record:
            raise ConfigError(
                f"{path}: no text column (looked for {', '.join(TEXT_COLUMNS)}); use --text-column"
            )
        text = record.get(tcol)
        if not isinstance(text, str):
            yield BadRow(line, f"text column {tcol!r} holds {type(text).__name__}, not text")
            continue
        lcol = _pick(LABEL_COLUMNS, record, label_column)
        label = None
        if lcol is not None and record.get(lcol) not in (None, ""):
            try:
                label = _label_index(record[lcol], spec, label_map)
            except ValueError as exc:
                yield BadRow(line, str(exc))
                continue
        ecol = _pick(ENTITY_COLUMNS, record, entity_column)
        yield ReplayRow(line, text, label, _entity(record.get(ecol) if ecol else None, text))


def _entity(column_value: object, text: str) -> str | None:
    """The first ticker-like token of the entity column, else the first cashtag in the text.

    >>> _entity("$BWV $AUVI", ""), _entity(None, "Why $aapl fell"), _entity("", "no tag")
    ('$BWV', '$AAPL', None)
    """
    for token in re.split(r"[\s,;]+", str(column_value or "")):
        if ENTITY.fullmatch(token):
            return token.upper()
    found = CASHTAG.search(text)
    return found.group(0).upper() if found else None
