"""Decode a Kafka record into a message, or into a DeadLetter: never an exception.

>>> from schemas.messages import Interaction
>>> out = decode(Interaction, b"\\xff\\xfe not json", topic="interactions", partition=0, offset=7)
>>> type(out).__name__, out.error, out.source_topic, out.offset
('DeadLetter', 'invalid_utf8', 'interactions', 7)
"""

from __future__ import annotations

import base64
from typing import TypeVar

from schemas import limits
from schemas.base import DecodeError, Message
from schemas.fields import now_ms
from schemas.messages import DeadLetter

M = TypeVar("M", bound=Message)

#: How much of an oversized record a DeadLetter keeps, so that it fits the dead-letter topic.
DEAD_LETTER_RAW_KEEP = 64 * 1024


def dead_letter(
    raw: bytes | None,
    *,
    error: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None = None,
) -> DeadLetter:
    """Wrap a bad record with why it is bad and where it came from."""
    data = raw or b""
    kept = data[:DEAD_LETTER_RAW_KEEP]
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        error=error,
        reason=reason[:4096],
        raw_b64=base64.b64encode(kept).decode("ascii"),
        raw_size=len(data),
        raw_truncated=len(kept) < len(data),
        key_b64=base64.b64encode(key[:1024]).decode("ascii") if key else None,
        ts_ms=now_ms(),
    )


def decode(
    model: type[M],
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None = None,
    max_bytes: int = limits.MAX_RECORD_BYTES,
) -> M | DeadLetter:
    """Return the validated message, or a DeadLetter that says why it is not one."""
    try:
        return model.from_bytes(raw, max_bytes=max_bytes)
    except DecodeError as exc:
        return dead_letter(
            raw,
            error=exc.kind,
            reason=exc.reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
        )
    except Exception as exc:  # a validator bug must not kill a consumer either
        return dead_letter(
            raw,
            error="internal",
            reason=f"unexpected {type(exc).__name__} while decoding {model.__name__}: {exc}",
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
        )
