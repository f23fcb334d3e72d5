"""The local broker: start, start again, stop, restart and crash, with clients reconnecting.

These tests run their own broker on free ports in a temporary directory, so they never
disturb the shared one.
"""

from __future__ import annotations

import asyncio

import pytest

from streamtune.core.clients import make_consumer, make_producer
from streamtune.core.local_kafka import LocalKafka
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from tests.conftest import free_port
from tests.kafka_helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_broker(tmp_path):
    settings = Settings(
        kafka_data_dir=tmp_path / "kafka",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        topic_prefix="life-",
    )
    settings = Settings(
        **{**settings.model_dump(), "bootstrap_servers": f"127.0.0.1:{settings.kafka_port}"}
    )
    broker = LocalKafka(settings)
    yield broker
    broker.stop()


def test_start_twice_stop_and_status(own_broker):
    first = own_broker.start()
    assert not first.already_running
    second = own_broker.start()
    assert second.already_running and second.pid == first.pid
    status = own_broker.status()
    assert status.running and status.answering and status.pid == first.pid
    assert (own_broker.log_dir / "server.log").stat().st_size > 0
    assert own_broker.stop() is True
    assert not own_broker.status().running
    assert own_broker.stop() is False  # stopping a stopped broker is harmless


def test_clients_reconnect_across_restart_and_crash(own_broker):
    settings = own_broker.settings
    own_broker.start()
    asyncio.run(create_topics(settings))
    topic = settings.topic("interactions")

    async def produce_through_outage(values: list[bytes], outage) -> None:
        producer = make_producer(settings, request_timeout_ms=60_000)
        await producer.start()
        try:
            for value in values[: len(values) // 2]:
                await producer.send_and_wait(topic, value, key=value)
            await asyncio.get_running_loop().run_in_executor(None, outage)
            # The same producer object carries on once the broker is back.
            for value in values[len(values) // 2 :]:
                await producer.send_and_wait(topic, value, key=value)
        finally:
            await producer.stop()

    def clean_restart() -> None:
        assert own_broker.stop()
        own_broker.start()

    def crash_and_restart() -> None:
        assert own_broker.kill()  # SIGKILL, as a crash would
        own_broker.start()

    before = [f"a{i}".encode() for i in range(20)]
    after = [f"b{i}".encode() for i in range(20)]
    asyncio.run(produce_through_outage(before, clean_restart))
    asyncio.run(produce_through_outage(after, crash_and_restart))

    records = asyncio.run(read_all(settings, topic, expect=40))
    assert sorted(r.value for r in records) == sorted(
        before + after
    )  # nothing lost, nothing doubled


def test_consumer_group_resumes_after_restart(own_broker):
    settings = own_broker.settings
    own_broker.start()
    asyncio.run(create_topics(settings))
    topic = settings.topic("feedback")

    async def produce(values):
        producer = make_producer(settings)
        await producer.start()
        try:
            for v in values:
                await producer.send_and_wait(topic, v, key=v)
        finally:
            await producer.stop()

    async def consume(n: int) -> list[bytes]:
        consumer = make_consumer(settings, topic, group_id="life-group")
        await consumer.start()
        out: list[bytes] = []
        try:
            while len(out) < n:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    out.extend(r.value for r in records)
                await consumer.commit()
        finally:
            await consumer.stop()
        return out

    asyncio.run(produce([b"x1", b"x2", b"x3"]))
    assert sorted(asyncio.run(consume(3))) == [b"x1", b"x2", b"x3"]
    assert own_broker.stop()
    own_broker.start()
    asyncio.run(produce([b"y1", b"y2"]))
    # Committed offsets survived the restart: only the new records come back.
    assert sorted(asyncio.run(consume(2))) == [b"y1", b"y2"]


def test_port_taken_by_another_process_is_a_clear_error(own_broker, tmp_path):
    import socket

    from streamtune.core.errors import BrokerError

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", own_broker.settings.kafka_port))
        squatter.listen()
        with pytest.raises(BrokerError, match="in use by another process"):
            own_broker.start()
