"""The contract errors. ``streamtune.core.errors`` roots the rest of the project's errors here."""

from __future__ import annotations


class StreamtuneError(Exception):
    """Root of every error streamtune raises on purpose."""


class ContractError(StreamtuneError, ValueError):
    """A record does not satisfy its contract (bad JSON, wrong type, out of limits)."""


class UnknownTaskError(ContractError, KeyError):
    """A task name that the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
