"""`streamtune serve` as a real process: SIGTERM finishes the batch in flight and commits;
SIGKILL loses nothing either, because only acknowledged work was ever committed."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from schemas import Prediction
from schemas.topics import INTERACTIONS, PREDICTIONS
from streamtune.core.settings import Settings
from streamtune.replay import read_rows, replay
from tests.conftest import DATA
from tests.kafka_helpers import committed, read_all
from tests.serve_helpers import start_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASK = "tfns-sentiment"
N = 600
#: Interactions sent before the stop; the rest only after it, so that however fast serve is,
#: the stop lands before the stream's end.
HELD = 400


def produce(settings: Settings, stop: int, rate: float, start: int = 0) -> None:
    """Rows ``start`` to ``stop`` of TFNS valid (ids from their line numbers)."""
    rows = list(read_rows(DATA / "tfns" / "valid.csv", TASK, limit=stop))[start:]
    asyncio.run(replay(settings, rows, task=TASK, rate=rate, id_prefix="p", progress=False))


def answered(settings: Settings) -> list[Prediction]:
    records = asyncio.run(read_all(settings, settings.topic(PREDICTIONS)))
    return [Prediction.from_bytes(r.value) for r in records]


@pytest.fixture
def settings(topics: Settings) -> Settings:
    return Settings(**{**topics.model_dump(), "serve_group_id": f"{topics.topic_prefix}serve"})


def wait_for_answers(settings: Settings, at_least: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(answered(settings)) < at_least:
        assert time.monotonic() < deadline, "answers did not arrive"
        time.sleep(0.2)


# Two serve starts (180 s each), two waits for answers (60 s each), two exits (60 s each).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopped_or_killed_mid_stream_loses_nothing(settings, how):
    first = start_serve(settings)
    produce(settings, HELD, rate=0)  # a backlog, so the stop lands mid-stream
    wait_for_answers(settings, 50)
    first.send_signal(how)
    code = first.wait(timeout=60)
    output = first.stdout.read()  # type: ignore[union-attr]
    before = answered(settings)
    commits = asyncio.run(
        committed(settings, settings.serve_group_id, settings.topic(INTERACTIONS))
    )
    assert sum(commits.values()) <= len(before), "committed more than was answered"
    if how == signal.SIGTERM:
        assert code == 0, output
        assert "serve stopped: answered" in output
        # Graceful: the batch in flight was finished and everything answered was committed.
        assert sum(commits.values()) == len(before)
        assert len({p.interaction_id for p in before}) == len(before)
    assert 50 <= len(before) <= HELD < N, len(before)

    produce(settings, N, rate=0, start=HELD)  # the rest of the stream, after the stop
    second = start_serve(settings)
    try:
        wait_for_answers(settings, N)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    after = answered(settings)
    ids = {p.interaction_id for p in after}
    assert len(ids) == N  # nothing lost
    duplicates = len(after) - N
    if how == signal.SIGTERM:
        assert duplicates == 0
    else:
        # At-least-once: only the batch in flight at the kill may be answered twice.
        assert duplicates <= 2 * 32
