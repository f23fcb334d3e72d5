"""The worker's errors; like every streamtune error they derive from ``StreamtuneError``."""

from __future__ import annotations

from schemas.errors import StreamtuneError


class WorkerError(StreamtuneError, RuntimeError):
    """The streams worker failed, or did not report what it was asked to."""
