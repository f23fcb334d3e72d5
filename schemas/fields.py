"""Reusable validated field types for the message contracts."""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from schemas import limits
from schemas.errors import UnknownTaskError
from schemas.tasks import get_task


def _known_task(name: str) -> str:
    try:
        get_task(name)
    except UnknownTaskError as exc:
        raise PydanticCustomError("unknown_task", str(exc)) from None
    return name


def _sane_timestamp(ts_ms: int) -> int:
    latest = int(time.time() * 1000) + limits.MAX_CLOCK_SKEW_MS
    if ts_ms < limits.MIN_TS_MS:
        raise PydanticCustomError(
            "timestamp_range",
            "timestamp {value} ms is before 2000-01-01 ({min}); send Unix epoch milliseconds",
            {"value": ts_ms, "min": limits.MIN_TS_MS},
        )
    if ts_ms > latest:
        raise PydanticCustomError(
            "timestamp_range",
            "timestamp {value} ms is more than {skew} ms in the future",
            {"value": ts_ms, "skew": limits.MAX_CLOCK_SKEW_MS},
        )
    return ts_ms


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "text is empty or only whitespace")
    return text


Id = Annotated[str, Field(pattern=limits.ID_PATTERN, description="1-128 chars of [A-Za-z0-9_.:-]")]
TaskName = Annotated[
    str,
    Field(pattern=limits.TASK_PATTERN, description="a registered task name"),
    AfterValidator(_known_task),
]
TimestampMs = Annotated[
    int,
    Field(ge=0, description="Unix epoch milliseconds, after 2000-01-01, not far in the future"),
    AfterValidator(_sane_timestamp),
]
Text = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_TEXT_CHARS, description="the text to classify"),
    AfterValidator(_not_blank),
]
LabelIndex = Annotated[
    int, Field(ge=0, lt=limits.MAX_LABELS, description="index into the task's labels")
]
ShortStr = Annotated[str, Field(min_length=1, max_length=128)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Entity = Annotated[str, Field(pattern=r"^[A-Za-z0-9$][A-Za-z0-9$._\-]{0,31}$")]


def now_ms() -> int:
    """The current time as Unix epoch milliseconds."""
    return int(time.time() * 1000)


def clamp_ts(ts_ms: int, now: int, max_ahead_ms: int = limits.MAX_AHEAD_MS) -> int:
    """A producer's timestamp as a clock may take it: at most ``max_ahead_ms`` past ``now``
    (the consumer's clock, which the broker's append time never runs ahead of).

    >>> clamp_ts(10_000_000, now=1_000, max_ahead_ms=60_000)   # far future: now + the skew
    61000
    >>> clamp_ts(500, now=1_000)                               # the past is kept
    500
    """
    return min(ts_ms, now + max_ahead_ms)
