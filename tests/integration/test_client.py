"""The producer client (``streamtune.client``) against the real broker: exactly once, in key
order per partition, validated before sending, co-partitioned feedback with its source, the
blocking form, and backpressure."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas import Feedback, Interaction
from schemas.topics import FEEDBACK, INTERACTIONS
from streamtune.client import InvalidMessage, StreamtuneProducer, SyncProducer
from streamtune.core.clients import make_consumer
from streamtune.core.errors import ConfigError, StreamtuneError
from streamtune.core.topic_reader import topic_partitions
from tests.kafka_helpers import read_all

pytestmark = pytest.mark.integration

TASK = "tfns-sentiment"
TEXT = "$AAPL beats estimates on strong iPhone sales"


async def scan(settings, topic: str, n: int, prefix: str, timeout_s: float) -> dict[str, object]:
    """Read ``topic`` to its end without keeping the records: how many there are, whether
    each of the ``n`` ids ``prefix{i:07d}`` came exactly once, and whether every partition
    holds its ids in increasing order (the order they were sent in)."""
    consumer = make_consumer(settings, group_id=None, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    seen = bytearray(n)
    duplicates = out_of_order = wrong_partition = total = 0
    partitioner = DefaultPartitioner()
    try:
        tps = await topic_partitions(consumer, topic)
        parts = [tp.partition for tp in tps]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        last = {tp: -1 for tp in tps}
        deadline = time.monotonic() + timeout_s

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            assert time.monotonic() < deadline, f"read only {total} of {n} records in time"
            batches = await consumer.getmany(*tps, timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                for record in records:
                    total += 1
                    index = int(record.key[len(prefix) :])
                    if seen[index]:
                        duplicates += 1
                    seen[index] = 1
                    if index <= last[tp]:
                        out_of_order += 1
                    last[tp] = index
                    if partitioner(record.key, parts, parts) != tp.partition:
                        wrong_partition += 1
                    if index % 10_000 == 0:  # a sample decodes under the consumers' contract
                        Interaction.from_bytes(record.value)
        per_partition = {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()
    return {
        "total": total,
        "missing": n - sum(seen),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "wrong_partition": wrong_partition,
        "per_partition": per_partition,
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_million_interactions_arrive_exactly_once_in_key_order_per_partition(topics):
    settings, n, prefix = topics, 1_000_000, "m-"

    async def produce() -> tuple[float, int]:
        began = time.monotonic()
        async with StreamtuneProducer(settings, source="bench") as client:
            ts = int(time.time() * 1000)
            for i in range(n):
                await client.send_interaction(f"{prefix}{i:07d}", task=TASK, text=TEXT, ts_ms=ts)
            await client.flush()
            acknowledged = client.acknowledged
        return time.monotonic() - began, acknowledged

    seconds, acknowledged = asyncio.run(produce())
    began = time.monotonic()
    report = asyncio.run(scan(settings, settings.topic(INTERACTIONS), n, prefix, timeout_s=600))
    read_s = time.monotonic() - began
    print(
        f"\nclient: {n} interactions sent and acknowledged in {seconds:.1f} s "
        f"({n / seconds:.0f}/s); read back and checked in {read_s:.1f} s; {report}"
    )
    assert acknowledged == n
    assert report["total"] == n
    assert report["missing"] == report["duplicates"] == 0
    assert report["out_of_order"] == 0
    assert report["wrong_partition"] == 0
    assert all(count > n // 10 for count in report["per_partition"].values())


def test_feedback_carries_its_source_and_co_partitions_with_its_interaction(topics):
    settings = topics

    async def produce() -> None:
        async with StreamtuneProducer(settings, source="web") as client:
            desk = client.feedback_from("desk-7", task=TASK)
            for i in range(60):
                await client.send_interaction(f"fb-{i}", task=TASK, text=f"{TEXT} #{i}")
                await desk.send(f"fb-{i}", label=i % 3)
            await client.send_feedback("fb-0", task=TASK, label=1, source="override")

    asyncio.run(produce())
    interactions = asyncio.run(read_all(settings, settings.topic(INTERACTIONS), expect=60))
    feedback = asyncio.run(read_all(settings, settings.topic(FEEDBACK), expect=61))
    assert len(interactions) == 60 and len(feedback) == 61
    itx = {r.key.decode(): (r.partition, Interaction.from_bytes(r.value)) for r in interactions}
    assert {m.source for _, m in itx.values()} == {"web"}
    labels = [(r.key.decode(), r.partition, Feedback.from_bytes(r.value)) for r in feedback]
    assert sorted(f.source for _, _, f in labels) == ["desk-7"] * 60 + ["override"]
    for key, partition, fb in labels:
        assert itx[key][0] == partition, "feedback must land on its interaction's partition"
        assert fb.interaction_id == key and fb.task == TASK
    assert {k: f.label for k, _, f in labels if f.source == "desk-7"} == {
        f"fb-{i}": i % 3 for i in range(60)
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"text": "x" * 5000}, ["invalid Interaction", "text", "at most 4096 characters"]),
        ({"text": "   "}, ["text", "empty or only whitespace"]),
        ({"task": "no-such-task"}, ["task", "no-such-task"]),
        ({"interaction_id": "bad id!"}, ["interaction_id", "should match pattern"]),
        ({"ts_ms": 1_700_000_000}, ["ts_ms", "before 2000-01-01", "milliseconds"]),
        ({"entity": "not a ticker"}, ["entity"]),
        ({"source": ""}, ["source", "at least 1 character"]),
    ],
)
def test_an_invalid_interaction_raises_a_clear_error_and_sends_nothing(topics, fields, expected):
    settings = topics

    async def produce() -> InvalidMessage:
        async with StreamtuneProducer(settings) as client:
            await client.send_interaction("ok-1", task=TASK, text=TEXT)
            call = {"task": TASK, "text": TEXT, **fields}
            with pytest.raises(InvalidMessage) as caught:
                await client.send_interaction(call.pop("interaction_id", "bad-1"), **call)
            await client.send_interaction("ok-2", task=TASK, text=TEXT)
        return caught.value

    error = asyncio.run(produce())
    assert isinstance(error, StreamtuneError) and isinstance(error, ValueError)
    for part in expected:
        assert part in str(error), str(error)
    assert str(error).endswith("nothing was sent")
    records = asyncio.run(read_all(settings, settings.topic(INTERACTIONS), expect=2))
    assert sorted(r.key for r in records) == [b"ok-1", b"ok-2"]


def test_invalid_feedback_names_the_field_and_the_limit(topics):
    settings = topics

    async def produce() -> list[str]:
        errors = []
        async with StreamtuneProducer(settings) as client:
            for call in (
                {"label": 3},
                {"label": -1},
                {"label": "1"},
                {"source": "s" * 200},
            ):
                with pytest.raises(InvalidMessage) as caught:
                    await client.send_feedback("fb-1", **{"task": TASK, "label": 0, **call})
                errors.append(str(caught.value))
            with pytest.raises(InvalidMessage, match=r"source.*at most 128 characters"):
                client.feedback_from("s" * 200)
        return errors

    errors = asyncio.run(produce())
    assert "label 3 is out of range for task 'tfns-sentiment' (0..2)" in errors[0]
    assert "label: Input should be greater than or equal to 0" in errors[1]
    assert "label: Input should be a valid integer" in errors[2]
    assert "source: String should have at most 128 characters" in errors[3]
    assert asyncio.run(read_all(settings, settings.topic(FEEDBACK), timeout_s=5)) == []


def test_the_sync_form_sends_flushes_and_works_inside_a_running_loop(topics):
    settings = topics
    with SyncProducer(settings, source="sync") as client:
        for i in range(40):
            client.send_interaction(f"s-{i}", task=TASK, text=TEXT)
        client.feedback_from("desk").send("s-0", task=TASK, label=2)
        with pytest.raises(InvalidMessage, match="label"):
            client.send_feedback("s-1", task=TASK, label=9)
        client.flush()
        assert client.client.acknowledged == 41

    async def inside_a_loop() -> None:  # a caller with its own running loop (a notebook)
        with SyncProducer(settings) as client:
            client.send_interaction("s-40", task=TASK, text=TEXT)

    asyncio.run(inside_a_loop())
    records = asyncio.run(read_all(settings, settings.topic(INTERACTIONS), expect=41))
    assert sorted(r.key.decode() for r in records) == sorted(f"s-{i}" for i in range(41))
    feedback = asyncio.run(read_all(settings, settings.topic(FEEDBACK), expect=1))
    assert [Feedback.from_bytes(r.value).source for r in feedback] == ["desk"]


def test_backpressure_bounds_the_unacknowledged_records(topics):
    settings = topics
    limit, n = 200, 5000

    async def produce() -> tuple[int, int]:
        worst = waits = 0
        async with StreamtuneProducer(settings, max_in_flight=limit, linger_ms=50) as client:
            original = client._wait_below

            async def counted(bound: int) -> None:
                nonlocal waits
                waits += 1
                await original(bound)

            client._wait_below = counted
            for i in range(n):
                await client.send_interaction(f"bp-{i:05d}", task=TASK, text=TEXT)
                worst = max(worst, client._unacked)
        return worst, waits

    worst, waits = asyncio.run(produce())
    assert worst <= limit
    assert waits > 0, "the sends never had to wait for acknowledgements"
    records = asyncio.run(read_all(settings, settings.topic(INTERACTIONS), expect=n))
    assert len({r.key for r in records}) == len(records) == n


def test_a_missing_topic_fails_at_once_naming_the_fix(kafka_settings):
    async def produce() -> None:
        async with StreamtuneProducer(kafka_settings) as client:
            await client.send_interaction("x-1", task=TASK, text=TEXT)

    began = time.monotonic()
    with pytest.raises(ConfigError, match="streamtune topics create"):
        asyncio.run(produce())
    assert time.monotonic() - began < 20


def test_a_record_sent_once_is_not_lost_when_linger_sends_it(topics):
    """A lone record goes out after ``linger_ms`` without a flush."""
    settings = topics

    async def produce() -> int:
        async with StreamtuneProducer(settings, linger_ms=20) as client:
            await client.send_interaction("lone-1", task=TASK, text=TEXT)
            for _ in range(100):
                if client.acknowledged:
                    break
                await asyncio.sleep(0.05)
            return client.acknowledged

    assert asyncio.run(produce()) == 1
