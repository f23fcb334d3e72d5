"""streamtune's error hierarchy. Every error derives from :class:`StreamtuneError` and from
the builtin it resembles, so existing ``except ValueError`` handlers keep working."""

from __future__ import annotations

from schemas.errors import ContractError, StreamtuneError, UnknownTaskError


class ConfigError(StreamtuneError, ValueError):
    """A setting is missing or inconsistent."""


class BrokerError(StreamtuneError, RuntimeError):
    """The local Kafka broker could not be resolved, started, reached or stopped."""


class DeliveryError(StreamtuneError, RuntimeError):
    """A record was not acknowledged by the broker."""


__all__ = [
    "BrokerError",
    "ConfigError",
    "ContractError",
    "DeliveryError",
    "StreamtuneError",
    "UnknownTaskError",
]
