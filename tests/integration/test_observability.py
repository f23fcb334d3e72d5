"""/metrics and /healthz of the long-running processes, against the real broker and model.

- serve's /metrics parses with prometheus_client's own parser and counts what it answered;
- serve's /healthz turns unhealthy when its processing is blocked while interactions wait,
  and healthy again once it is released;
- the Faust worker's /metrics counts joined records and dead letters by code, and its
  /healthz fails while its join agent is stuck with input waiting, then recovers;
- a worker whose consumer stops fetching one input partition (what a broker restart can
  leave behind) re-arms it by itself, and the partition's backlog is consumed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas import Feedback, Interaction
from schemas.topics import FEEDBACK, INTERACTIONS
from streams.topology import app_id
from streamtune.core.clients import make_producer
from streamtune.core.observability import GroupLag
from streamtune.core.settings import Settings
from tests.conftest import free_port
from tests.examples import TS
from tests.serve_helpers import TASK, running_server, wait_until
from tests.worker_helpers import WorkerProcess, worker_env

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (urllib raises on 503; the status is what the test reads)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local test URL)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def send_feedback(
    settings: Settings, prefix: str, n: int, *, spread: bool = False, bad: bool = False
) -> None:
    """``n`` feedback records (``spread``: round-robin over partitions 0-2), then one that is
    not JSON if ``bad``."""
    producer = make_producer(settings)
    await producer.start()
    try:
        for i in range(n):
            fb = Feedback(interaction_id=f"{prefix}-{i}", task=TASK, label=1, ts_ms=TS)
            await producer.send(
                settings.topic(FEEDBACK),
                fb.to_bytes(),
                key=fb.interaction_id.encode(),
                partition=i % 3 if spread else None,
            )
        if bad:
            await producer.send(settings.topic(FEEDBACK), b"[1, 2", key=b"bad")
        await producer.flush()
    finally:
        await producer.stop()


def wait_for(worker: WorkerProcess, check, timeout_s: float = 120.0, every_s: float = 0.2):  # type: ignore[no-untyped-def]
    """``check()``'s first truthy value; fails if the worker dies or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert worker.alive(), worker.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"not met in {timeout_s:.0f}s"
        time.sleep(every_s)
    return value


async def send_interactions(settings: Settings, n: int, prefix: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for i in range(n):
            itx = Interaction(
                interaction_id=f"{prefix}-{i}",
                task=TASK,
                text=f"$AAPL beats estimates {i}",
                ts_ms=TS,
            )
            await producer.send(
                settings.topic(INTERACTIONS), itx.to_bytes(), key=itx.interaction_id.encode()
            )
        await producer.send_and_wait(settings.topic(INTERACTIONS), b"{not json", key=b"bad")
    finally:
        await producer.stop()


@pytest.fixture
def serve_settings(topics: Settings) -> Settings:
    return Settings(
        **{
            **topics.model_dump(),
            "serve_tasks": TASK,
            "serve_group_id": f"{topics.topic_prefix}serve",
            "serve_metrics_port": free_port(),
            "health_stall_s": 2.0,
            "health_interval_s": 0.3,
        }
    )


def test_serve_metrics_parse_and_healthz_fails_while_a_stalled_consumer_has_lag(serve_settings):
    base = f"http://127.0.0.1:{serve_settings.serve_metrics_port}"

    async def go() -> None:
        async with running_server(serve_settings) as server:
            await send_interactions(serve_settings, 20, "m")
            await wait_until(lambda: server.stats.answered >= 20, 120)
            await wait_until(lambda: server.liveness.health.lag == 0, 30)
            status, text = await asyncio.to_thread(get, f"{base}/metrics")
            assert status == 200
            got = samples(text)
            assert got[("streamtune_events_total", (("outcome", "answered"),))] == 20
            assert got[("streamtune_dead_letters_total", (("code", "invalid_json"),))] == 1
            assert got[("streamtune_end_to_end_latency_seconds_count", ())] == 20
            assert got[("streamtune_batch_size_records_sum", ())] == 21
            version = (("task", TASK), ("version", "base"))
            assert got[("streamtune_live_adapter_info", version)] == 1
            group = (("group", serve_settings.serve_group_id),)
            assert got[("streamtune_consumer_lag_records", group)] == 0
            assert (await asyncio.to_thread(get, f"{base}/healthz"))[0] == 200

            # Block the inference thread: the serve loop stops consuming for real.
            release = threading.Event()
            server._infer.submit(release.wait, 120)
            try:
                await send_interactions(serve_settings, 10, "stalled")
                await wait_until(lambda: not server.liveness.health.healthy, 60)
                status, body = await asyncio.to_thread(get, f"{base}/healthz")
                assert status == 503, body
                assert "stalled" in body
                lag = samples((await asyncio.to_thread(get, f"{base}/metrics"))[1])
                assert lag[("streamtune_consumer_lag_records", group)] > 0
            finally:
                release.set()
            await wait_until(lambda: server.liveness.health.lag == 0, 60)
            assert (await asyncio.to_thread(get, f"{base}/healthz"))[0] == 200
            assert server.stats.answered == 30

    asyncio.run(go())


#: Runs ``streamtune worker`` with its join agent stuck while a flag file exists: a real
#: Faust agent awaiting forever, the failure Faust's users meet most.
STUCK_WORKER = """
import asyncio, sys
from pathlib import Path
from streams import join_agent
flag = Path(sys.argv[1])
process = join_agent.JoinAgent.process
async def stuck(self, batches):
    while flag.exists():
        await asyncio.sleep(0.1)
    return await process(self, batches)
join_agent.JoinAgent.process = stuck
from streamtune.cli import main
sys.exit(main(["worker"]))
"""


def test_worker_metrics_count_dead_letters_and_healthz_fails_while_its_agent_is_stuck(
    topics, tmp_path
):
    port = free_port()
    flag = tmp_path / "stuck"
    env = worker_env(topics, worker_metrics_port=port, health_interval_s=0.3, health_stall_s=2)
    command = [sys.executable, "-c", STUCK_WORKER, str(flag)]
    worker = WorkerProcess(env, tmp_path / "worker.log", command).start()

    def metrics() -> dict:
        try:
            status, text = get(f"http://127.0.0.1:{port}/metrics")
        except OSError:
            return {}  # not listening yet
        return samples(text) if status == 200 else {}

    def health() -> tuple[int, str]:
        try:
            return get(f"http://127.0.0.1:{port}/healthz")
        except OSError:
            return 0, ""

    dead = ("streamtune_dead_letters_total", (("code", "invalid_json"),))
    try:
        asyncio.run(send_feedback(topics, "w", 5, bad=True))
        # The worker starts, joins its group, then counts. The six records sit on several
        # partitions, so the dead letter can be counted before the rest are joined.
        joined = ("streamtune_events_total", (("outcome", "joined"),))
        got = wait_for(worker, lambda: (m := metrics()).get(dead) and m.get(joined, 0) >= 6 and m)
        assert got[dead] == 1
        assert got[("streamtune_batch_size_records_count", ())] >= 1
        wait_for(worker, lambda: health()[0] == 200)

        flag.touch()  # the join agent stops consuming; the process and its loop live on
        asyncio.run(send_feedback(topics, "stuck", 5))
        body = wait_for(worker, lambda: (h := health())[0] == 503 and h, 60)[1]
        assert "stalled" in body
        lag = samples(get(f"http://127.0.0.1:{port}/metrics")[1])
        assert lag[("streamtune_consumer_lag_records", (("group", app_id(topics)),))] > 0

        flag.unlink()  # unstuck: it consumes the backlog and is healthy again
        wait_for(worker, lambda: health()[0] == 200, 60)
    finally:
        worker.stop()


WEDGED_WORKER = """
import asyncio, sys
from pathlib import Path
from faust.types import TP
from streams import app as worker_app
flag, topic = Path(sys.argv[1]), sys.argv[2]
register = worker_app._register
def wedged(app, t):
    register(app, t)
    @app.task
    async def wedge():
        while not flag.exists():
            await asyncio.sleep(0.1)
        # What a resume that never comes leaves behind: assigned, but no longer fetched.
        app.consumer.pause_partitions([TP(topic, 1)])
        print("wedged", flush=True)
worker_app._register = wedged
from streamtune.cli import main
sys.exit(main(["worker"]))
"""


def test_worker_rearms_an_input_partition_its_consumer_stopped_fetching(topics, tmp_path):
    port = free_port()
    flag = tmp_path / "wedge"
    feedback = topics.topic(FEEDBACK)
    env = worker_env(
        topics, worker_metrics_port=port, health_interval_s=0.5, worker_partition_stall_s=3
    )
    command = [sys.executable, "-c", WEDGED_WORKER, str(flag), feedback]
    worker = WorkerProcess(env, tmp_path / "worker.log", command).start()

    async def offsets() -> dict[int, tuple[int, int]]:
        lag = GroupLag(topics, app_id(topics), [feedback])
        await lag.start()
        try:
            return {tp.partition: pair for tp, pair in (await lag.offsets()).items()}
        finally:
            await lag.stop()

    def caught_up() -> bool:
        return all(done == end > 0 for done, end in asyncio.run(offsets()).values())

    rearms = ("streamtune_partition_rearms_total", (("topic", feedback),))
    try:
        asyncio.run(send_feedback(topics, "before", 30, spread=True))
        wait_for(worker, caught_up, every_s=0.5)
        flag.touch()
        wait_for(worker, lambda: "wedged" in worker.log.read_text(), 30)
        asyncio.run(send_feedback(topics, "after", 30, spread=True))
        # Partitions 0 and 2 are consumed at once; partition 1 only once the guard re-arms it.
        wait_for(worker, caught_up, 90, every_s=0.5)
        log = worker.log.read_text()
        assert f"partition {feedback}-1: lag" in log and "re-arming its fetch" in log, log[-3000:]
        assert samples(get(f"http://127.0.0.1:{port}/metrics")[1])[rearms] >= 1
    finally:
        worker.stop()
