"""Bad input ends up in dead-letter with its reason; the consumer goes on and commits."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from schemas import DeadLetter, Interaction
from schemas.limits import MAX_TEXT_CHARS
from schemas.topics import DEAD_LETTER, INTERACTIONS
from streamtune.core.clients import make_producer
from streamtune.core.validating_consumer import ValidatingConsumer
from tests.examples import TS
from tests.kafka_helpers import committed, read_all

pytestmark = pytest.mark.integration


def good(i: int) -> bytes:
    return Interaction(
        interaction_id=f"ok-{i}", task="tfns-sentiment", text=f"tweet {i}", ts_ms=TS
    ).to_bytes()


BAD = {
    "invalid_json": b'{"interaction_id": "x",',
    "wrong_type": orjson.dumps(
        {"interaction_id": "x", "task": "tfns-sentiment", "text": 42, "ts_ms": TS}
    ),
    "oversized": orjson.dumps(
        {
            "interaction_id": "x",
            "task": "tfns-sentiment",
            "text": "a" * (MAX_TEXT_CHARS + 1),
            "ts_ms": TS,
        }
    ),
    "unknown_task": orjson.dumps(
        {"interaction_id": "x", "task": "horoscope", "text": "hi", "ts_ms": TS}
    ),
    "non_utf8": b'{"interaction_id": "x", "text": "\xc3\x28"}',
}
EXPECTED = {
    "invalid_json": ("invalid_json", "invalid JSON"),
    "wrong_type": ("validation", "text: Input should be a valid string"),
    "oversized": ("validation", f"at most {MAX_TEXT_CHARS} characters"),
    "unknown_task": ("unknown_task", "unknown task 'horoscope'"),
    "non_utf8": ("invalid_utf8", "not UTF-8"),
}


def test_bad_input_goes_to_dead_letter_and_the_stream_goes_on(topics):
    settings = topics
    source = settings.topic(INTERACTIONS)
    group = f"{settings.topic_prefix}validator"

    async def go():
        producer = make_producer(settings)
        await producer.start()
        try:
            # Good and bad interleaved, all on one key so their order is known.
            for i, (name, raw) in enumerate(BAD.items()):
                await producer.send_and_wait(source, good(i), key=b"same")
                await producer.send_and_wait(
                    source, raw, key=b"same", headers=[("case", name.encode())]
                )
            await producer.send_and_wait(source, good(99), key=b"same")

            consumer = ValidatingConsumer(
                settings, Interaction, [source], group_id=group, producer=producer
            )
            await consumer.start()
            seen: list[Interaction] = []
            try:
                while consumer.dead_lettered + len(seen) < 2 * len(BAD) + 1:
                    batch = await consumer.poll(timeout_ms=500)
                    seen.extend(d.message for d in batch.messages)
                    await consumer.commit(batch)
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
        dead = await read_all(settings, settings.topic(DEAD_LETTER), expect=len(BAD))
        return seen, dead

    seen, dead = asyncio.run(go())
    assert [m.interaction_id for m in seen] == [f"ok-{i}" for i in range(len(BAD))] + ["ok-99"]
    letters = [DeadLetter.from_bytes(r.value) for r in dead]
    assert len(letters) == len(BAD)
    for letter, (name, raw) in zip(letters, BAD.items(), strict=True):
        error, needle = EXPECTED[name]
        assert letter.error == error, (name, letter.reason)
        assert needle in letter.reason, (name, letter.reason)
        assert letter.source_topic == source
        assert letter.raw == raw
    # Offsets are those of the bad records in the source partition: good, bad, good, bad, ...
    assert [letter.offset for letter in letters] == [1, 3, 5, 7, 9]
    assert len({letter.partition for letter in letters}) == 1
    # Everything processed was committed, nothing more.
    offsets = asyncio.run(committed(settings, group, source))
    assert sum(o or 0 for o in offsets.values()) == 2 * len(BAD) + 1
