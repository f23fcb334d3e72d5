"""The worker's errors; like every streamtune error they derive from ``StreamtuneError``."""

from __future__ import annotations

from schemas.errors import StreamtuneError


class WorkerError(StreamtuneError, RuntimeError):
    """The streams worker failed, or did not report what it was asked to."""


class EventError(StreamtuneError, ValueError):
    """A record on one of the worker's internal topics is not an event it knows.

    The agent that reads it dead-letters it and carries on.
    """
