"""The producer client for event producers: send interactions and feedback to streamtune.

Importable without torch or Faust: it needs only aiokafka, orjson, pydantic and
pydantic-settings (``pip install 'streamtune[client]'``). Records are validated against the
wire schemas before they leave (:class:`InvalidMessage` names the field and the limit),
keyed by ``interaction_id``, batched, and sent by an idempotent producer with ``acks=all``.

- :class:`StreamtuneProducer`: the async client (``async with``);
- :class:`SyncProducer`: the same, blocking, on an event loop in a thread of its own.
"""

from __future__ import annotations

from streamtune.client.producer import (
    DEFAULT_LINGER_MS,
    DEFAULT_MAX_IN_FLIGHT,
    FeedbackSender,
    StreamtuneProducer,
)
from streamtune.client.sync import SyncFeedbackSender, SyncProducer
from streamtune.core.errors import DeliveryError, InvalidMessage, StreamtuneError
from streamtune.core.settings import Settings

__all__ = [
    "DEFAULT_LINGER_MS",
    "DEFAULT_MAX_IN_FLIGHT",
    "DeliveryError",
    "FeedbackSender",
    "InvalidMessage",
    "Settings",
    "StreamtuneError",
    "StreamtuneProducer",
    "SyncFeedbackSender",
    "SyncProducer",
]
