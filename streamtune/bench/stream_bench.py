"""``streamtune bench stream``: events per second through the join and drift agents.

``--rows`` TFNS rows become that many interactions, predictions and feedback records
(three events each), published before anything reads them. Then, on the same topics:

- **faust**: the worker (``streams.app``) runs in a child process; the clock starts at its
  first fetch once it owns the source partitions (as the raw clock starts at its first
  fetch) and stops when the task agent has counted every labelled example into
  its windows and drift statistics. That includes everything the worker persists: the
  labelled records, the join and task tables' changelogs and the hop through the
  task-events topic.
- **raw aiokafka**: a plain ``AIOKafkaConsumer`` reads the same three topics from the start
  and does the same work in one loop, with the same code: decode, join, publish
  ``labelled`` and wait for the acknowledgements, drift statistics and windows. No Faust, no
  tables, no changelog, no second hop.
- **raw aiokafka, read only**: the same consumer, reading only, for scale.

``ratio`` is faust over raw aiokafka doing the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from schemas.codec import decode
from schemas.fields import now_ms
from schemas.messages import DeadLetter, Feedback, Interaction, Prediction
from schemas.tasks import get_task
from streams.drift import DriftConfig, DriftMonitor
from streams.errors import WorkerError
from streams.join import JoinConfig, JoinPartition
from streams.topology import app_id
from streams.windows import TaskState, WindowConfig, add_example
from streamtune.core.clients import make_admin, make_consumer, make_producer
from streamtune.core.logging_setup import configure_logging
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from streamtune.replay import ReplayRow, read_rows

DATA = Path(__file__).resolve().parents[2] / "data" / "tfns"
TASK = "tfns-sentiment"
ROWS = 10_000


def _records(rows: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """Interactions, predictions and feedback for ``rows`` TFNS texts (cycled if needed)."""
    texts = [r for r in read_rows(DATA / "valid.csv", TASK) if isinstance(r, ReplayRow)]
    rng = random.Random(11)  # noqa: S311 - benchmark data, not a secret
    rng.shuffle(texts)  # the file is sorted by label; a stationary stream is not
    ts = now_ms()
    out: dict[str, list[tuple[bytes, bytes]]] = {
        "interactions": [],
        "predictions": [],
        "feedback": [],
    }
    for i, row in enumerate(islice(cycle(texts), rows)):
        key = f"bench-{i}"
        label = row.label if row.label is not None else 2
        guess = label if rng.random() < 0.8 else rng.randrange(3)
        confidence = round(rng.uniform(0.4, 0.99), 4)
        probs = [round((1 - confidence) / 2, 6)] * 3
        probs[guess] = round(1 - 2 * probs[0], 6)
        out["interactions"].append(
            (
                key.encode(),
                Interaction(interaction_id=key, task=TASK, text=row.text, ts_ms=ts).to_bytes(),
            )
        )
        out["predictions"].append(
            (
                key.encode(),
                Prediction(
                    interaction_id=key, task=TASK, label=guess, probs=probs, adapter_version="base",
                    model_id="bench", latency_ms=1.0, ts_ms=ts,
                ).to_bytes(),
            )
        )  # fmt: skip
        out["feedback"].append(
            (
                key.encode(),
                Feedback(interaction_id=key, task=TASK, label=label, ts_ms=ts).to_bytes(),
            )
        )
    return out


async def _publish(settings: Settings, records: dict[str, list[tuple[bytes, bytes]]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        pending = []
        for name, batch in records.items():
            for key, value in batch:
                pending.append(await producer.send(settings.topic(name), value, key=key))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _raw(settings: Settings, events: int, work: bool) -> float:
    """Events per second of a plain aiokafka consumer (doing the worker's work if ``work``)."""
    names = {settings.topic(n): n for n in ("interactions", "predictions", "feedback")}
    models = {"interactions": Interaction, "predictions": Prediction, "feedback": Feedback}
    handlers = {
        "interactions": "on_interaction",
        "predictions": "on_prediction",
        "feedback": "on_feedback",
    }
    s = settings
    config = JoinConfig.from_settings(s.join)
    parts = {p: JoinPartition(p, {}, config) for p in range(s.stream_partitions)}
    monitor = DriftMonitor(TASK, DriftConfig.from_settings(s.drift), get_task(TASK).num_labels)
    state = TaskState(TASK)
    windows = WindowConfig.from_settings(s.windows)
    consumer = make_consumer(s, group_id=None, max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = make_producer(s)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(t, p) for t in names for p in range(s.stream_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        began = time.perf_counter()
        while seen < events:
            fetched = await consumer.getmany(timeout_ms=200, max_records=s.worker_max_poll_records)
            for tp, batch in fetched.items():
                seen += len(batch)
                if not work:
                    continue
                name, part = names[tp.topic], parts[tp.partition]
                apply = getattr(part, handlers[name])
                for r in batch:
                    msg = decode(
                        models[name], r.value, topic=r.topic, partition=r.partition, offset=r.offset
                    )
                    if not isinstance(msg, DeadLetter):
                        apply(msg, offset=r.offset, ts_ms=r.timestamp)
                examples = part.take_labelled()
                if examples:
                    pending = [
                        await producer.send(s.topic("labelled"), e.to_bytes(), key=e.interaction_id.encode(), partition=tp.partition)
                        for e in examples
                    ]  # fmt: skip
                    acked = await asyncio.gather(*pending)
                    part.confirm(examples, [m.offset for m in acked])
                for obs in part.take_observations().values():
                    for item in obs.labelled:
                        add_example(
                            state, windows, partition=item.partition, offset=item.offset, now_ms=0
                        )
                    monitor.observe(obs.to_event(TASK))
                part.take_dead_letters()
                part.changes()
        return events / (time.perf_counter() - began)
    finally:
        await producer.stop()
        await consumer.stop()


def _faust(settings: Settings, rows: int) -> dict[str, Any]:
    """Run the worker in a child process; it reports its own timing in a file."""
    env = {**os.environ, **_env(settings)}
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "streamtune.bench.stream_bench",
                "--child",
                str(rows),
                str(result),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if not result.exists():
            raise WorkerError(f"the faust worker reported nothing:\n{proc.stderr[-4000:]}")
        return json.loads(result.read_text())


def _env(settings: Settings) -> dict[str, str]:
    return {
        "STREAMTUNE_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMTUNE_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMTUNE_WORKER_APP_ID": settings.worker_app_id,
        "STREAMTUNE_JOIN_PREDICTION_WAIT_S": str(settings.join_prediction_wait_s),
    }


def _child(
    rows: int, result: Path
) -> None:  # pragma: no cover - runs in the benchmark's child process
    """Run the worker until the task agent has counted ``rows`` examples; print the timing."""
    from streams.app import create_app, run_worker
    from streams.batching import BatchingConsumer

    configure_logging(logging.WARNING, role="worker")  # this child process's entry point
    settings = Settings()
    app = create_app(settings)
    tasks = app.task_runner  # type: ignore[attr-defined]
    clock: dict[str, float] = {}
    task_process = tasks.process
    sources = {settings.topic(n) for n in ("interactions", "predictions", "feedback")}
    fetch = BatchingConsumer._wait_next_records

    async def timed_fetch(self: Any, timeout: float) -> Any:
        # Like the raw consumer's clock: from the first fetch that can return source records.
        if "start" not in clock and any(tp.topic in sources for tp in self.assignment()):
            clock["start"] = time.perf_counter()
        return await fetch(self, timeout)

    async def timed_tasks(batches: list[Any]) -> None:
        await task_process(batches)
        state = tasks.t.task_table.data.get(TASK)
        if state and state["examples"] >= rows and "start" in clock:
            seconds = time.perf_counter() - clock["start"]
            result.write_text(json.dumps({"seconds": seconds, "events": 3 * rows}))
            os._exit(0)  # the figures are in; no need for a graceful shutdown

    BatchingConsumer._wait_next_records = timed_fetch  # type: ignore[method-assign]
    tasks.process = timed_tasks
    run_worker(app, loglevel="warning")


async def _cleanup(settings: Settings) -> None:
    admin = make_admin(settings)
    await admin.start()
    try:
        described = await admin.describe_topics()
        mine = [t["topic"] for t in described if t["topic"].startswith(settings.topic_prefix)]
        await admin.delete_topics(mine)
    finally:
        await admin.close()


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    """Publish the events, then time the Faust worker and the plain consumers on them."""
    prefix = f"bench-{secrets.token_hex(4)}-"
    settings = Settings(
        **{**settings.model_dump(), "topic_prefix": prefix, "join_prediction_wait_s": 0.0}
    )
    rows = getattr(args, "rows", None) or ROWS
    events = 3 * rows
    asyncio.run(create_topics(settings))
    try:
        asyncio.run(_publish(settings, _records(rows)))
        read_only = asyncio.run(_raw(settings, events, work=False))
        faust = _faust(settings, rows)
        # After faust, so that `labelled` holds faust's output; the baseline appends to it.
        raw = asyncio.run(_raw(settings, events, work=True))
    finally:
        asyncio.run(_cleanup(settings))
    faust_rate = faust["events"] / faust["seconds"]
    return {
        "bench": "stream",
        "events": events,
        "faust_events_per_s": round(faust_rate, 1),
        "raw_aiokafka_events_per_s": round(raw, 1),
        "ratio": round(faust_rate / raw, 3),
        "raw_aiokafka_read_only_events_per_s": round(read_only, 1),
        "ratio_vs_read_only": round(faust_rate / read_only, 3),
        "app_id": app_id(settings),
    }


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    _child(int(sys.argv[2]), Path(sys.argv[3]))
