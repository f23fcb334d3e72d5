"""Factories for aiokafka clients with streamtune's reliability settings.

Producers are idempotent with ``acks=all``; consumers never auto-commit, so offsets are
committed only for records whose outputs were acknowledged.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamtune.core.settings import Settings


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (``acks=all``, ordered retries); call ``await p.start()``."""
    kwargs: dict[str, Any] = {
        **settings.kafka_client_kwargs(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
    }
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (``enable_auto_commit=False``)."""
    kwargs: dict[str, Any] = {
        **settings.kafka_client_kwargs(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client; call ``await admin.start()`` and ``await admin.close()``."""
    kwargs = settings.kafka_client_kwargs()
    return AIOKafkaAdminClient(**kwargs)
