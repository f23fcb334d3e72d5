"""Every contract goes through the real broker and comes back equal."""

from __future__ import annotations

import asyncio

import pytest

from schemas import MESSAGE_TYPES
from schemas.topics import DEAD_LETTER
from streamtune.core.clients import make_producer
from tests.examples import examples
from tests.kafka_helpers import read_all

pytestmark = pytest.mark.integration


def test_every_contract_round_trips_through_kafka(topics):
    settings = topics
    topic = settings.topic(DEAD_LETTER)  # any topic will do: the value carries the type
    sent = examples()

    async def go():
        producer = make_producer(settings)
        await producer.start()
        try:
            for name, message in sent.items():
                await producer.send_and_wait(topic, message.to_bytes(), key=name.encode())
        finally:
            await producer.stop()
        return await read_all(settings, topic, expect=len(sent))

    records = asyncio.run(go())
    assert len(records) == len(sent)
    received = {r.key.decode(): MESSAGE_TYPES[r.key.decode()].from_bytes(r.value) for r in records}
    assert received == sent
