"""Topic creation is idempotent and applies the configs from schemas.topics."""

from __future__ import annotations

import asyncio

import pytest

from schemas.topics import CO_PARTITIONED, TOPIC_NAMES
from streamtune.core.errors import BrokerError
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics, describe_topic_configs
from tests.conftest import _delete_topics

pytestmark = pytest.mark.integration


def test_create_is_idempotent_with_the_right_configs(kafka_settings):
    settings = kafka_settings
    try:
        first = asyncio.run(create_topics(settings))
        second = asyncio.run(create_topics(settings))
        assert [r.created for r in first] == [True] * len(TOPIC_NAMES)
        assert [r.created for r in second] == [False] * len(TOPIC_NAMES)
        counts = {r.name.removeprefix(settings.topic_prefix): r.partitions for r in second}
        assert {counts[n] for n in CO_PARTITIONED} == {settings.stream_partitions}

        configs = asyncio.run(
            describe_topic_configs(settings, [settings.topic(n) for n in TOPIC_NAMES])
        )
        assert configs[settings.topic("model-updates")]["cleanup.policy"] == "compact"
        assert configs[settings.topic("labelled")]["retention.ms"] == "-1"
        assert configs[settings.topic("interactions")]["cleanup.policy"] == "delete"
        assert configs[settings.topic("interactions")]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    finally:
        asyncio.run(_delete_topics(settings))


def test_partition_mismatch_is_reported(kafka_settings):
    settings = kafka_settings
    try:
        asyncio.run(create_topics(settings))
        wider = Settings(**{**settings.model_dump(), "stream_partitions": 6})
        with pytest.raises(BrokerError, match="has 3 partitions, the definition says 6"):
            asyncio.run(create_topics(wider))
    finally:
        asyncio.run(_delete_topics(settings))


def test_cli_topics_create_twice(kafka_settings):
    import subprocess
    import sys

    env_args = [
        "--bootstrap-servers",
        kafka_settings.bootstrap_servers,
        "--topic-prefix",
        kafka_settings.topic_prefix,
    ]
    try:
        cmd = [sys.executable, "-m", "streamtune.cli", "topics", "create", *env_args]
        first = subprocess.run(cmd, capture_output=True, text=True, check=True)
        second = subprocess.run(cmd, capture_output=True, text=True, check=True)
        assert first.stdout.count("created") == len(TOPIC_NAMES)
        assert second.stdout.count("exists") == len(TOPIC_NAMES)
    finally:
        asyncio.run(_delete_topics(kafka_settings))
