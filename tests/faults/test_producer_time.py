"""Time comes from the broker, not the producer (issue 24, item 8).

A producer stamps its records (and an Interaction's ``ts_ms``, up to a day ahead by
contract). Before the fix:
- one record stamped far in the future moved its join partition's stream time there, so
  every pending entry expired and the feedback still on its way was dead-lettered as late;
- an Interaction's ``ts_ms`` a day ahead became its entity sighting's time, which moved the
  alert agent's eviction clock a day on: every other entity's baseline was forgotten;
- one record stamped decades ago made the monitor build a range of a bucket per second
  since then: `streamtune status` ran out of memory.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys

import pytest

from schemas import Feedback, Interaction, Prediction
from schemas.fields import now_ms
from schemas.topics import INTERACTIONS
from streams.alerting import AlertBook, AlertConfig
from streams.join import JoinConfig, JoinPartition
from streams.sightings import Sighting
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.monitor import state as monitor_state
from streamtune.monitor.state import MonitorState
from tests.conftest import REPO

pytestmark = pytest.mark.faults

TASK = "tfns-sentiment"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MAX_AHEAD_MS = 60_000  # schemas.limits.MAX_AHEAD_MS: how far ahead a record may move a clock


def interaction(i: str, ts_ms: int, text: str = "$ACME shares fall") -> Interaction:
    return Interaction(interaction_id=i, task=TASK, text=text, ts_ms=ts_ms)


def prediction(i: str, ts_ms: int, label: int = 0) -> Prediction:
    return Prediction(
        interaction_id=i, task=TASK, label=label, probs=[0.8, 0.1, 0.1], adapter_version="v1",
        model_id="m", latency_ms=1.0, ts_ms=ts_ms,
    )  # fmt: skip


def test_a_far_future_record_expires_no_pending_join_entry():
    now = now_ms()
    join = JoinPartition(0, {}, JoinConfig(ttl_ms=HOUR_MS, prediction_wait_ms=0))
    for n in range(5):  # interactions whose feedback is on its way
        join.on_interaction(interaction(f"i{n}", now), offset=n, ts_ms=now)
    join.on_feedback(  # feedback that waits for its interaction
        Feedback(interaction_id="early", task=TASK, label=1, ts_ms=now), offset=0, ts_ms=now
    )
    # One record whose Kafka timestamp a producer set a year ahead (its body is valid).
    join.on_interaction(interaction("evil", now), offset=5, ts_ms=now + 365 * DAY_MS)

    assert join.stream_time <= now_ms() + MAX_AHEAD_MS, "a producer moved stream time"
    assert join.counts["expired_interactions"] == 0 and join.counts["expired_feedback"] == 0
    for n in range(5):
        fb = Feedback(interaction_id=f"i{n}", task=TASK, label=1, ts_ms=now)
        join.on_feedback(fb, offset=1 + n, ts_ms=now)
    join.on_interaction(interaction("early", now), offset=6, ts_ms=now)
    assert join.counts["late_feedback"] == 0, [d.reason for d in join.take_dead_letters()]
    assert sorted(e.interaction_id for e in join.take_labelled()) == [
        "early", "i0", "i1", "i2", "i3", "i4",
    ]  # fmt: skip


def test_an_interaction_stamped_a_day_ahead_evicts_no_baseline():
    """The sighting's time is the stream's, and the alert book's clock is clamped too."""
    now = now_ms()
    cfg = AlertConfig(window_events=10, min_events=8, min_baseline_events=20, h_fire=3.0)
    book = AlertBook(cfg)
    entities = [f"E{n}" for n in range(20)]
    for n, entity in enumerate(entities):  # baselines built an hour ago
        for k in range(30):
            s = Sighting(entity, f"{entity}-{k}", TASK, "t", k % 3, 0.9, "v1", now - HOUR_MS + k)
            book.observe(s, partition=0, offset=n * 100 + k)

    # Through the join: the producer's ts_ms is a day ahead (valid by contract).
    join = JoinPartition(
        0, {}, JoinConfig(ttl_ms=HOUR_MS, prediction_wait_ms=0, pair_tasks=frozenset({TASK}))
    )
    ahead = now + DAY_MS - 60_000
    join.on_interaction(interaction("evil", ahead, "$EVIL soars"), offset=0, ts_ms=now)
    join.on_prediction(prediction("evil", now), offset=0, ts_ms=now)
    (seen,) = join.take_paired()
    assert seen.ts_ms <= now_ms() + MAX_AHEAD_MS, "the sighting kept the producer's time"
    book.observe(Sighting.of("EVIL", seen), partition=0, offset=10_000)
    # And one that reached the sightings topic with that time anyway (an older worker).
    raw = Sighting("EVIL2", "evil2", TASK, "t", 1, 0.9, "v1", ahead)
    book.observe(raw, partition=0, offset=10_001)

    # The agent sweeps at the newest sighting's time: what the book saw, clamped.
    newest = max(state.last_ts for state in book.states.values())
    assert newest <= now_ms() + MAX_AHEAD_MS
    assert book.evict(newest) == [], "baselines evicted by a producer's clock"
    assert all(book.state(e).base_events >= 20 for e in entities)


def test_the_monitor_span_is_bounded_whatever_the_timestamps():
    now = now_ms()
    state = MonitorState(bucket_s=3600.0)  # hour buckets: the old code's range stays small here
    for n, ts in enumerate((946_684_800_000, now - 1000, now, now + 100 * 365 * DAY_MS)):
        itx = interaction(f"i{n}", now)
        state.add(INTERACTIONS, itx.interaction_id.encode(), itx.to_bytes(), ts)
    snap = state.snapshot()
    times = snap["throughput"]["t"]
    assert len(times) <= monitor_state._MAX_POINTS, len(times)
    assert snap["last_ts_ms"] <= now_ms() + MAX_AHEAD_MS, "a producer moved the monitor's clock"
    assert times[-1] >= now - HOUR_MS, "the chart ends where the stream is, not in 2100"
    assert len(state.snapshot(max_points=50)["throughput"]["t"]) == 50


async def _produce(settings: Settings, stamps: list[int]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for n, stamp in enumerate(stamps):
            itx = interaction(f"old-{n}", now_ms())
            await producer.send_and_wait(
                settings.topic(INTERACTIONS), itx.to_bytes(), key=itx.interaction_id.encode(),
                timestamp_ms=stamp, partition=0,
            )  # fmt: skip
    finally:
        await producer.stop()


def _limit_memory() -> None:
    """The child may use 2 GiB of address space: a range of a billion buckets cannot fit."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.integration
def test_status_survives_a_record_stamped_in_1970(topics: Settings):
    # A current record first, so that the history window (the last hour) starts before the
    # old one; then one stamped a millisecond after the epoch.
    asyncio.run(_produce(topics, [now_ms(), 1]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTUNE_")}
    env.update(
        STREAMTUNE_BOOTSTRAP_SERVERS=topics.bootstrap_servers,
        STREAMTUNE_TOPIC_PREFIX=topics.topic_prefix,
    )
    done = subprocess.run(
        [sys.executable, "-m", "streamtune.cli", "status"], env=env, cwd=REPO,
        capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "live adapters" in done.stdout
