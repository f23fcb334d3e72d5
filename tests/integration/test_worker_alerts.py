"""Alerting in the real worker against the real broker.

The test plays the inference side: it publishes interactions and their predictions, so it
knows exactly which entity sees which sentiment. Entities come from cashtags, from the
interaction's own ``entity`` field and from an alias list ("RIL" is RELIANCE).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from schemas import Alert, DeadLetter, Interaction, Prediction
from streams.status import read_table
from streams.topology import Topology
from tests.examples import TS
from tests.worker_helpers import (
    WorkerProcess,
    decoded,
    delete_prefixed_topics,
    publish,
    wait_for,
    wait_ready,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HANG_S = 12  # the webhook's timeout in the hanging-webhook test
TASK = "tfns-sentiment"
STEADY = [0, 1, 2, 2, 1]  # 20% bearish, 40% bullish, 40% neutral
DETECTOR = {
    "alert_window_events": 10,
    "alert_min_events": 8,
    "alert_min_baseline_events": 20,
    "alert_cusum_h": 4.0,
    "alert_min_lift": 0.3,
}


def _entities_file(tmp_path: Path) -> Path:
    path = tmp_path / "entities.csv"
    path.write_text("entity,alias\nRELIANCE,Reliance Industries\nRELIANCE,RIL\n")
    return path


def _events(n0: int, plan: list[tuple[str, int]]) -> list[tuple[str, str, object]]:
    """Interaction + prediction records; ``plan`` is ``(how the text names it, label)``."""
    out: list[tuple[str, str, object]] = []
    for i, (name, label) in enumerate(plan, n0):
        iid = f"a-{i}"
        entity = None
        if name.startswith("field:"):
            name, entity = "the company", name.removeprefix("field:")
        text = f"{name} update number {i}, label {label}"
        probs = [0.05, 0.05, 0.05]
        probs[label] = 0.9
        out.append(
            ("interactions", iid, Interaction(interaction_id=iid, task=TASK, text=text,
                                              ts_ms=TS + i * 1000, entity=entity))
        )  # fmt: skip
        out.append(
            ("predictions", iid, Prediction(interaction_id=iid, task=TASK, label=label,
                                            probs=probs, adapter_version="v-test", model_id="m",
                                            latency_ms=1.0, ts_ms=TS + i * 1000))
        )  # fmt: skip
    return out


def _steady(names: list[str], rounds: int) -> list[tuple[str, int]]:
    return [(name, label) for _ in range(rounds) for label in STEADY for name in names]


async def _applied(settings, expected: dict[str, int]) -> dict | None:
    """The alerts table once every entity has applied ``expected[entity]`` sightings."""
    table = await read_table(settings, Topology(settings, app=None).changelog("alerts"))
    for entity, n in expected.items():
        state = table.get(entity)
        if state is None or state["seen"] < n:
            return None
    return table


def test_one_alert_for_the_burst_none_for_steady_and_none_again_after_kill_9(topics, tmp_path):
    settings = topics
    env = worker_env(
        settings, alert_entities_file=_entities_file(tmp_path), worker_instance_id="alerts-test",
        **DETECTOR,
    )  # fmt: skip
    first = WorkerProcess(env, tmp_path / "first.log").start()
    second = WorkerProcess(env, tmp_path / "second.log")
    names = ["$STDY", "RIL", "field:CALM", "$BRST"]
    # 40 steady sightings each, then 12 bearish ones about $BRST only. Sightings of one
    # entity from different source partitions are applied in the order the join handles
    # them, so the steady part goes first and the burst only once it was applied.
    steady = _steady(names, 8)
    burst = [("$BRST", 0)] * 12
    # After the restart: the surge goes on (no new alert: it is the same surge), steady others.
    phase2 = [("$BRST", 0)] * 6 + _steady(names[:3], 2)

    async def go():
        await wait_ready(settings, first)
        await publish(settings, _events(0, steady))
        await wait_for(
            lambda: _applied(settings, {"STDY": 40, "RELIANCE": 40, "CALM": 40, "BRST": 40}),
            60, "the steady part applied", first,
        )  # fmt: skip
        await publish(settings, _events(len(steady), burst))
        alerts = await wait_for(
            lambda: decoded(settings, "alerts", Alert), 60, "the burst's alert", first
        )
        before = await wait_for(
            lambda: _applied(settings, {"STDY": 40, "RELIANCE": 40, "CALM": 40, "BRST": 52}),
            60, "every sighting applied", first,
        )  # fmt: skip
        first.kill()
        second.start()
        await publish(settings, _events(len(steady) + len(burst), phase2))
        after = await wait_for(
            lambda: _applied(settings, {"STDY": 50, "RELIANCE": 50, "CALM": 50, "BRST": 58}),
            90, "every sighting applied after the restart", second,
        )  # fmt: skip
        return alerts, before, after, await decoded(settings, "alerts", Alert)

    try:
        alerts, before, after, final = asyncio.run(go())
    finally:
        second.stop()
        first.stop()
        asyncio.run(delete_prefixed_topics(settings))
    assert [(a.entity, a.kind) for a in alerts] == [("BRST", "bearish_surge")]
    alert = alerts[0]
    assert alert.count == 10 and alert.share - alert.baseline_share >= 0.3
    assert alert.adapter_version == "v-test"
    assert len(alert.examples) == 3 and all(t.startswith("$BRST") for t in alert.examples)
    assert alert.window_start_ts_ms <= alert.window_end_ts_ms
    # The restarted worker recovered the baselines (not rebuilt from scratch)...
    for entity in ("STDY", "RELIANCE", "CALM", "BRST"):
        assert after[entity]["base_events"] >= before[entity]["base_events"]
        assert after[entity]["base_events"] > 20
    assert after["BRST"]["active"]["bearish_surge"] is True
    # ...and fired nothing again.
    assert [a.alert_id for a in final] == [alert.alert_id]


def test_a_hanging_webhook_neither_stalls_nor_loses_alerts(topics, tmp_path):
    settings = topics
    hanging = socket.socket()  # accepts connections (backlog), never answers
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)
    url = f"http://127.0.0.1:{hanging.getsockname()[1]}/alerts"
    env = worker_env(
        settings,
        alert_webhook_url=url,
        alert_webhook_timeout_s=HANG_S,
        alert_webhook_retries=0,
        alert_webhook_queue=1,
        **DETECTOR,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    bursting = [f"$BU{n}" for n in range(4)]
    steady = _steady(bursting, 8)
    burst = [(name, 0) for _ in range(12) for name in bursting]

    async def go():
        await wait_ready(settings, worker)
        await publish(settings, _events(0, steady))
        await wait_for(
            lambda: _applied(settings, {name[1:]: 40 for name in bursting}),
            60, "the steady part applied", worker,
        )  # fmt: skip
        await publish(settings, _events(len(steady), burst))
        await wait_for(
            lambda: _applied(settings, {name[1:]: 52 for name in bursting}),
            60, "every sighting applied", worker,
        )  # fmt: skip
        alerts = await decoded(settings, "alerts", Alert)
        # Everything was applied while the webhook still held its first alert.
        timed_out_by_then = [
            d for d in await decoded(settings, "dead-letter", DeadLetter) if "no answer" in d.reason
        ]

        async def dead_lettered():
            letters = await decoded(settings, "dead-letter", DeadLetter)
            letters = [d for d in letters if d.error == "webhook_undeliverable"]
            return letters if len(letters) >= len(alerts) else None

        letters = await wait_for(dead_lettered, 60, "the undelivered alerts dead-lettered", worker)
        return timed_out_by_then, alerts, letters

    try:
        timed_out_by_then, alerts, letters = asyncio.run(go())
    finally:
        worker.stop()
        hanging.close()
        asyncio.run(delete_prefixed_topics(settings))
    assert sorted(a.entity for a in alerts) == [name[1:] for name in bursting]
    # The queue holds one alert: one in flight, one queued, two dead-lettered at once.
    assert timed_out_by_then == []
    assert sorted(Alert.from_bytes(d.raw).alert_id for d in letters) == sorted(
        a.alert_id for a in alerts
    )
    reasons = " ".join(d.reason for d in letters)
    assert "queue full" in reasons and "no answer" in reasons
