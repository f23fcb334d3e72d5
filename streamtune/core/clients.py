"""Factories for aiokafka clients with streamtune's reliability settings.

Producers are idempotent with ``acks=all``; consumers never auto-commit, so offsets are
committed only for records whose outputs were acknowledged. A client whose ``start()``
fails (no broker, a refused login) closes itself before the error goes up, so a failed
command leaves no half-open connections and no "Unclosed AIOKafkaProducer" behind.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamtune.core.settings import Settings


class _ReleasedOnFailedStart:
    """A client whose failed ``start()`` releases what it opened, so a refused connection
    leaves no "Unclosed AIOKafkaProducer" behind."""

    async def start(self) -> None:
        try:
            await super().start()  # type: ignore[misc]
        except BaseException:
            await self._release()
            raise

    async def _release(self) -> None:
        await self.stop()  # type: ignore[attr-defined]


class _Producer(_ReleasedOnFailedStart, AIOKafkaProducer):
    pass


class _Consumer(_ReleasedOnFailedStart, AIOKafkaConsumer):
    pass


class _Admin(_ReleasedOnFailedStart, AIOKafkaAdminClient):
    async def _release(self) -> None:
        await self.close()


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
    return _Producer(**kwargs)


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
    return _Consumer(*topics, **kwargs)


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client; call ``await admin.start()`` and ``await admin.close()``."""
    kwargs = settings.kafka_client_kwargs()
    return _Admin(**kwargs)


def login_name(settings: Settings) -> str | None:
    """The SASL user this client logs in as, or None without authentication: what
    :func:`require_topics` names when a topic may be hidden by the ACLs."""
    return settings.sasl_username if settings.security_protocol.startswith("SASL") else None


async def require_topics(
    producer: AIOKafkaProducer, topics: list[str], principal: str | None = None
) -> None:
    """Fail at once, naming the fix, when a topic is missing: a send would wait for it
    until the request timeout and log "not found" on every retry.

    With ``principal`` (an authenticated client), a topic the broker hides may also be one
    this principal is not authorised for: the broker lists only the topics it may see."""
    from streamtune.core.errors import ConfigError

    metadata = await producer.client.fetch_all_metadata()
    missing = sorted(set(topics) - set(metadata.topics()))
    if missing and principal is not None:
        raise ConfigError(
            f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)}: not found or not "
            f"authorised for User:{principal}; check the ACLs (`streamtune acls show`) or create "
            "the topics (`streamtune topics create`, same STREAMTUNE_TOPIC_PREFIX)"
        )
    if missing:
        raise ConfigError(
            f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} do"
            f"{'' if len(missing) > 1 else 'es'} not exist; create them with "
            "`streamtune topics create` (with the same STREAMTUNE_TOPIC_PREFIX)"
        )
