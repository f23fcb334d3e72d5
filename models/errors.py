"""Errors of the models room."""

from __future__ import annotations

from streamtune.core.errors import StreamtuneError


class AdapterRejected(StreamtuneError, ValueError):
    """An adapter failed verification or a compatibility check; the live model stays.

    ``kind`` is a short code: ``tampered``, ``unsigned``, ``unknown_key``, ``bad_signature``,
    ``incompatible``, ``malformed``, ``non_finite`` or ``stale`` (a replayed manifest older than
    the live one: see ``streamtune.model_updates.sequence``).
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
