"""Create streamtune's topics idempotently from the one definition in ``schemas.topics``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from schemas.topics import TopicSpec
from streamtune.core.clients import make_admin
from streamtune.core.errors import BrokerError
from streamtune.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicResult:
    name: str
    created: bool
    partitions: int


async def create_topics(
    settings: Settings, specs: list[TopicSpec] | None = None
) -> list[TopicResult]:
    """Create every missing topic; existing ones are left alone and reported.

    An existing topic with a different partition count is reported as an error, since
    co-partitioned joins depend on it.
    """
    specs = specs if specs is not None else settings.topic_specs()
    admin = make_admin(settings)
    await admin.start()
    try:
        existing = await _partition_counts(admin)
        results = []
        missing = [s for s in specs if s.name not in existing]
        for spec in missing:
            topic = NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=settings.topic_configs(spec),
            )
            try:
                resp = await admin.create_topics([topic], validate_only=False)
            except TopicAlreadyExistsError:  # a concurrent creator won the race
                continue
            for name, code, *rest in getattr(resp, "topic_errors", []):
                if code not in (0, TopicAlreadyExistsError.errno):
                    message = rest[0] if rest else ""
                    raise BrokerError(f"cannot create topic {name}: error {code} {message}")
        existing = await _wait_visible(admin, [s.name for s in specs])
        for spec in specs:
            have = existing.get(spec.name)
            if have is None:
                raise BrokerError(f"topic {spec.name} is still missing after creation")
            if have != spec.partitions:
                raise BrokerError(
                    f"topic {spec.name} has {have} partitions, the definition says {spec.partitions}; "
                    "co-partitioned joins need them equal (recreate it or set STREAMTUNE_STREAM_PARTITIONS)"
                )
            results.append(TopicResult(spec.name, spec in missing, have))
        return results
    finally:
        await admin.close()


async def describe_topic_configs(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    """The broker's view of each topic's configs."""
    admin = make_admin(settings)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        responses = await admin.describe_configs(resources)
        out: dict[str, dict[str, str]] = {}
        for response in responses:
            for _code, _msg, _rtype, name, entries in response.resources:
                out[name] = {entry[0]: entry[1] for entry in entries}
        return out
    finally:
        await admin.close()


async def _wait_visible(admin: object, names: list[str], timeout_s: float = 15.0) -> dict[str, int]:
    """Partition counts, once every topic in ``names`` shows up in metadata (it can lag a create)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        counts = await _partition_counts(admin)
        if all(name in counts for name in names) or loop.time() > deadline:
            return counts
        await asyncio.sleep(0.1)


async def _partition_counts(admin: object) -> dict[str, int]:
    described = await admin.describe_topics()  # type: ignore[attr-defined]
    return {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}


async def delete_prefixed_topics(settings: Settings) -> list[str]:
    """Delete every topic whose name starts with ``settings.topic_prefix`` (scratch runs:
    tests and benchmarks), the worker's and Faust's own included. Refuses an empty prefix."""
    from streamtune.core.errors import ConfigError

    if not settings.topic_prefix:
        raise ConfigError("refusing to delete topics: no topic prefix is set")
    admin = make_admin(settings)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            await admin.delete_topics(mine)
        return mine
    finally:
        await admin.close()
