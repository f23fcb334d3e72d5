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


class InvalidMessage(ContractError):
    """A message a producer is about to send breaks its schema; nothing was sent.

    ``message_type`` names the schema (``Interaction``, ``Feedback``); the text names each
    field, the limit it breaks and the value it got (see :func:`schemas.base.describe`);
    ``fields`` lists the offending fields (empty for a check across fields)."""

    def __init__(self, message_type: str, reason: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"invalid {message_type}: {reason}; nothing was sent")
        self.message_type = message_type
        self.reason = reason
        self.fields = fields


__all__ = [
    "BrokerError",
    "ConfigError",
    "ContractError",
    "DeliveryError",
    "InvalidMessage",
    "StreamtuneError",
    "UnknownTaskError",
]
