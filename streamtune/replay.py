"""Publish interactions (and, optionally, delayed feedback) from a CSV or JSONL file.

The shared data sets work as they are: the text and label columns are found by name
(``text``/``label``, ``category``, ``Tweet Text``/``Sentiment``, ...), labels may be
indices or names, and ``--label-map Positive=Bullish`` maps foreign label names.

>>> rows = list(read_rows(Path("data/tfns/valid.csv"), "tfns-sentiment", limit=2))
>>> rows[0].line, rows[0].label, rows[0].entity
(2, 0, '$ALLY')
"""

from __future__ import annotations

import asyncio
import csv
import heapq
import logging
import random
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from schemas.base import describe
from schemas.fields import now_ms
from schemas.messages import Feedback, Interaction
from schemas.tasks import TaskSpec, get_task
from schemas.topics import FEEDBACK, INTERACTIONS
from streamtune.errors import ConfigError, DeliveryError
from streamtune.kafka.clients import make_producer
from streamtune.settings import Settings

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "Text", "Tweet Text", "Comment Text", "sentence", "headline")
LABEL_COLUMNS = ("label", "Label", "category", "Sentiment", "sentiment", "intent")
ENTITY_COLUMNS = ("entity", "Stock Ticker", "ticker")
CASHTAG = re.compile(r"\$[A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?\b")
ENTITY = re.compile(r"[A-Za-z0-9$][A-Za-z0-9$._\-]{0,31}")
# Sized so replay never holds more than a few MB of unacknowledged sends.
MAX_IN_FLIGHT = 5000


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


@dataclass
class ReplayStats:
    interactions: int = 0
    feedback: int = 0
    bad_rows: int = 0
    seconds: float = 0.0
    bad_examples: list[BadRow] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.interactions / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"published {self.interactions} interactions and {self.feedback} feedback records "
            f"in {self.seconds:.1f}s ({self.rate:.0f} interactions/s); skipped {self.bad_rows} bad rows"
        )


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


def default_id_prefix(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "-", path.stem)[:40] or "replay"
    return f"{stem}-{secrets.token_hex(3)}"


class _Pacer:
    """Keeps a target rate (events/s); 0 means as fast as possible."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()

    async def wait(self, sent: int) -> None:
        if self.rate <= 0:
            return
        ahead = self.start + sent / self.rate - time.monotonic()
        if ahead > 0.002:
            await asyncio.sleep(ahead)


async def replay(
    settings: Settings,
    rows: Iterator[ReplayRow | BadRow],
    *,
    task: str,
    rate: float = 0.0,
    feedback_fraction: float = 0.0,
    feedback_delay_s: float = 0.0,
    id_prefix: str = "replay",
    seed: int | None = None,
    source: str = "replay",
    total: int | None = None,
    on_bad_row: Callable[[BadRow], None] | None = None,
    progress: bool | None = None,
) -> ReplayStats:
    """Publish ``rows`` as interactions; feedback for a fraction of them after a delay."""
    from tqdm import tqdm

    if not 0.0 <= feedback_fraction <= 1.0:
        raise ConfigError(f"feedback fraction {feedback_fraction} must lie in [0, 1]")
    if feedback_delay_s < 0 or rate < 0:
        raise ConfigError("feedback delay and rate must not be negative")
    get_task(task)
    rng = random.Random(seed)  # noqa: S311 - sampling, not secrets
    stats = ReplayStats()
    interactions_topic = settings.topic(INTERACTIONS)
    feedback_topic = settings.topic(FEEDBACK)
    due: list[tuple[float, int, str, int]] = []  # (due time, tiebreak, interaction_id, label)
    in_flight: list[asyncio.Future[object]] = []
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total, unit="msg", desc="replay", disable=not show, mininterval=0.5)
    producer = make_producer(settings)
    await producer.start()
    began = time.monotonic()
    pacer = _Pacer(rate)

    async def drain(limit: int) -> None:
        if len(in_flight) <= limit:
            return
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        in_flight.clear()
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise DeliveryError(f"{len(failures)} records were not acknowledged: {failures[0]!r}")

    async def send_due_feedback(until: float) -> None:
        while due and due[0][0] <= until:
            _, _, interaction_id, label = heapq.heappop(due)
            fb = Feedback(
                interaction_id=interaction_id, task=task, label=label, ts_ms=now_ms(), source=source
            )
            in_flight.append(
                await producer.send(feedback_topic, fb.to_bytes(), key=interaction_id.encode())
            )
            stats.feedback += 1

    def skip(bad: BadRow) -> None:
        stats.bad_rows += 1
        if len(stats.bad_examples) < 100:
            stats.bad_examples.append(bad)
        if on_bad_row is not None:
            on_bad_row(bad)
        bar.update(1)

    try:
        for row in rows:
            if isinstance(row, BadRow):
                skip(row)
                continue
            interaction_id = f"{id_prefix}-{row.line}"
            try:
                itx = Interaction(
                    interaction_id=interaction_id,
                    task=task,
                    text=row.text,
                    ts_ms=now_ms(),
                    entity=row.entity,
                    source=source,
                )
            except ValidationError as exc:
                skip(BadRow(row.line, describe(exc)))
                continue
            await pacer.wait(stats.interactions)
            in_flight.append(
                await producer.send(interactions_topic, itx.to_bytes(), key=interaction_id.encode())
            )
            stats.interactions += 1
            if row.label is not None and feedback_fraction > 0 and rng.random() < feedback_fraction:
                heapq.heappush(
                    due,
                    (
                        time.monotonic() + feedback_delay_s,
                        stats.interactions,
                        interaction_id,
                        row.label,
                    ),
                )
            await send_due_feedback(time.monotonic())
            await drain(MAX_IN_FLIGHT)
            bar.update(1)
        # Feedback still owed: publish each when its delay has passed.
        while due:
            await asyncio.sleep(max(0.0, due[0][0] - time.monotonic()))
            await send_due_feedback(time.monotonic())
        await drain(0)
    finally:
        stats.seconds = time.monotonic() - began
        bar.close()
        await producer.stop()
    return stats
