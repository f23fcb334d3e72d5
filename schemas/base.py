"""The base of every wire message: a schema version, orjson bytes in and out, strict validation."""

from __future__ import annotations

from typing import ClassVar, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas import limits
from schemas.errors import ContractError


class DecodeError(ContractError):
    """A record that cannot become a message. ``kind`` is a short machine-readable code."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Message(BaseModel):
    """Base of all streamtune messages.

    Unknown fields are ignored so that an older consumer can read a newer producer's
    records of the same major schema version; wrong types are rejected, never coerced.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = Field(default=1, description="major version of this message's schema")

    @field_validator("schema_version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value != cls.SCHEMA_VERSION:
            raise ValueError(
                f"unsupported schema_version {value}; this consumer reads version "
                f"{cls.SCHEMA_VERSION} of {cls.__name__}"
            )
        return value

    def to_bytes(self) -> bytes:
        """Serialise to compact JSON bytes with orjson."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_bytes(
        cls, raw: bytes | bytearray | memoryview | None, max_bytes: int | None = None
    ) -> Self:
        """Parse and validate; raises :class:`DecodeError` with a reason that names the problem."""
        if raw is None:
            raise DecodeError(
                "empty", f"record has no value (a tombstone?); expected a {cls.__name__}"
            )
        limit = limits.MAX_RECORD_BYTES if max_bytes is None else max_bytes
        if len(raw) > limit:
            raise DecodeError(
                "too_large", f"record is {len(raw)} bytes; the limit is {limit} bytes"
            )
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            kind = "invalid_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
            raise DecodeError(
                kind, f"{'not UTF-8' if kind == 'invalid_utf8' else 'invalid JSON'}: {exc}"
            ) from None
        if not isinstance(obj, dict):
            raise DecodeError(
                "wrong_type", f"expected a JSON object for {cls.__name__}, got {type(obj).__name__}"
            )
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise DecodeError(
                _error_kind(exc), f"invalid {cls.__name__}: {describe(exc)}"
            ) from None


def _error_kind(exc: ValidationError) -> str:
    types = {err["type"] for err in exc.errors()}
    if "unknown_task" in types:
        return "unknown_task"
    if any("schema_version" in err["loc"] for err in exc.errors()):
        return "unsupported_version"
    return "validation"


def describe(exc: ValidationError, max_errors: int = 5) -> str:
    """A one-line account of validation errors: field, problem and (shortened) value."""
    parts = []
    for err in exc.errors()[:max_errors]:
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across fields: the message names them
            parts.append(msg)
            continue
        where = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        shown = repr(value)
        if isinstance(value, str) and len(value) > 40:
            shown = f"{value[:40]!r}... ({len(value)} chars)"
        elif len(shown) > 60:
            shown = shown[:60] + "..."
        parts.append(f"{where}: {msg} (got {shown})")
    more = len(exc.errors()) - max_errors
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
