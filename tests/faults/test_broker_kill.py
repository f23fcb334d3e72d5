"""Broker faults under load: worker, serve and train run as child processes while
interactions and feedback stream in, and a broker dies.

- A 3-node KRaft cluster (replication 3, min ISR 2): one node is killed with SIGKILL, then
  brought back. No process restarts; every acknowledged interaction is answered; every
  labelled example is written exactly once.
- A single broker killed and restarted: every process recovers by itself within a bounded
  time, and nothing acknowledged is lost.
- An hour of stream time replayed in half a minute (record timestamps spread over the
  hour, join TTL five minutes): the join state, the window state and each process's RSS
  stay bounded. (Not combined with a kill: a failover stalls one topic for seconds of wall
  time, which the acceleration would turn into more than a TTL of stream time.)

Each test prints its figures (stall, lost, duplicated, state and memory).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from models.signing import generate_keypair
from streams.events import JOB_END_STATES
from streamtune.core.local_kafka import LocalCluster
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics
from streamtune.local_service import LocalService
from tests.conftest import unique_prefix
from tests.faults.load import Books, drive, free_port_block, service_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

COUNT = 1200
RATE = 40.0  # interactions per second: 30 s of load
DOWN_S = 12.0  # how long the killed broker stays down
HOUR_S = 3600.0
TTL_S = 300.0  # join TTL of the bounded-state run: a twelfth of the hour


def local_cluster(tmp_path, nodes: int) -> LocalCluster:
    first = free_port_block(2 * nodes)
    return LocalCluster(
        Settings(
            kafka_nodes=nodes,
            kafka_port=first,
            kafka_controller_port=first + nodes,
            kafka_data_dir=tmp_path / "kafka",
            kafka_heap="256m",
            bootstrap_servers="",
        )
    )


def settings_for(cluster: LocalCluster, tmp_path, **extra: object) -> Settings:
    key, _ = generate_keypair(tmp_path / "keys" / "trusted" / "trainer")
    replicas = min(3, cluster.settings.kafka_nodes)
    base = Settings(
        bootstrap_servers=cluster.bootstrap,
        topic_prefix=unique_prefix(),
        replication_factor=replicas,
        min_insync_replicas=min(2, replicas),
    )
    return service_settings(base, key, tmp_path / "keys" / "trusted", **extra)


def run(settings: Settings, log_dir, **drive_args: object) -> Books:
    asyncio.run(create_topics(settings))
    with LocalService(settings, log_dir) as service:
        books = asyncio.run(drive(settings, service, **drive_args))
        pids = {role: child.proc.pid for role, child in service.children.items()}
        service.check()
    assert pids == books.pids, "a process was restarted"
    return books


#: How long the 3-broker test waits for its train job's outcome after the load: LoRA on a busy
#: CPU, after the trainer has waited out the broker's failover.
JOB_END_S = 900.0


# Its own waits, at their bounds: the cluster's start (3 x 90 s), the service's (300 s), 30 s
# of load and the node's restart (90 s), 240 s to settle, 240 s for the trainer to take up the
# job, reads of the topics (about 180 s), JOB_END_S for the outcome, and the stops (about 250 s).
@pytest.mark.timeout(1600 + int(JOB_END_S))
def test_killing_one_of_three_brokers_loses_nothing_and_duplicates_nothing(tmp_path):
    cluster = local_cluster(tmp_path, 3)
    cluster.start()
    try:
        settings = settings_for(cluster, tmp_path)
        victim = cluster.nodes[0]  # the first bootstrap address: every client knows it

        def kill_and_return() -> None:
            victim.kill()
            time.sleep(DOWN_S)
            victim.start()

        books = run(
            settings, tmp_path / "logs", count=COUNT, rate=RATE, fault=kill_and_return,
            fault_after=COUNT // 4, min_jobs=1, job_end_timeout_s=JOB_END_S,
        )  # fmt: skip
    finally:
        cluster.stop()
    print(books.report("3 brokers, kill -9 one"))
    assert books.fault_at_s is not None
    assert len(books.acked_interactions) == COUNT, "min ISR 2 of 3: every write is accepted"
    assert not books.unanswered, sorted(books.unanswered)[:10]
    assert not books.missing_labelled, sorted(books.missing_labelled)[:10]
    assert books.duplicated_labelled == 0
    assert len(books.job_outcomes) == books.jobs >= 1, "the trainer took up every job"
    # Each job reached its end (a job still in "progress" has not shown it survived), and
    # none of them failed.
    unended = {j: s for j, s in books.job_outcomes.items() if s not in JOB_END_STATES}
    assert not unended, f"no end state within {JOB_END_S:.0f} s: {unended}"
    assert "failed" not in books.job_outcomes.values(), books.job_outcomes


# The service's start (300 s), 30 s of load, 240 s to settle, 240 s for the trainer to take up
# any job, reads of the topics (about 180 s) and the stop.
@pytest.mark.timeout(1200)
def test_state_and_memory_stay_bounded_over_an_hour_of_stream(topics: Settings, tmp_path):
    key, _ = generate_keypair(tmp_path / "keys" / "trusted" / "trainer")
    # An accelerated replay stamps records up to an hour ahead on purpose: the run trusts its
    # producer's clock that far (by default a record counts as at most a minute ahead).
    settings = service_settings(
        topics, key, tmp_path / "keys" / "trusted", join_ttl_s=TTL_S, stream_max_ahead_s=HOUR_S
    )
    books = run(settings, tmp_path / "logs", count=COUNT, rate=RATE, stream_span_s=HOUR_S)
    print(books.report("an hour of stream time in 30 s"))
    for sample in books.samples:
        print(
            f"  t={sample.at_s:5.1f}s sent={sample.sent:5d} join={sample.join_entries:4d} windows={sample.windows} state={sample.task_state_bytes}B rss={sample.rss_mb}"
        )
    assert not books.unanswered and books.duplicated_labelled == 0
    # A TTL of 300 s of stream time is 4 s of wall time here: feedback that trails its
    # interaction by more is dead-lettered as late (the kill tests, in real time, lose none).
    assert len(books.missing_labelled) <= COUNT // 20, len(books.missing_labelled)
    assert_bounded(books, ttl_s=TTL_S, span_s=HOUR_S)


def assert_bounded(books: Books, *, ttl_s: float, span_s: float) -> None:
    """While the stream flows, the join state is bounded by the TTL, not by the length of
    the stream; windows by the rehearsal history; memory does not grow once warm.

    After the last record, stream time stands still, so predictions that arrive late (serve
    lags by seconds of wall time, minutes of accelerated stream time) are held until newer
    records move it on: the final count is reported, not bounded by the TTL."""
    per_ttl = COUNT * ttl_s / span_s  # interactions that arrive within one TTL of stream time
    flowing = [s for s in books.samples if s.sent < COUNT]
    peak = max(s.join_entries for s in flowing)
    assert peak <= 3 * per_ttl + 100, (peak, per_ttl)
    assert books.samples[-1].join_entries < COUNT, "the join held the whole stream"
    # Windows: the rehearsal history plus closed windows that wait for training; the task's
    # whole state record stays small.
    assert books.samples[-1].task_state_bytes < 64 * 1024, books.samples[-1]
    warm = books.samples[len(books.samples) // 3 :]
    for role in ("worker", "serve", "train"):
        # The trainer is warm once it has been through a whole job (training, evaluation);
        # a sample taken while its first job was still loading would time that job instead.
        since = warm
        if role == "train":
            since = [s for s in warm if s.jobs_ended] or warm
        first, most = since[0].rss_mb[role], max(s.rss_mb[role] for s in since)
        assert most <= first * 1.25 + 50, (role, first, most)


# The broker's start (90 s), the service's (300 s), 15 s of load and the restart (90 s), 180 s
# to settle and 180 s for jobs, reads of the topics (about 180 s) and the stops.
@pytest.mark.timeout(1200)
def test_a_single_broker_restart_is_survived_by_every_process(tmp_path):
    cluster = local_cluster(tmp_path, 1)
    cluster.start()
    broker = cluster.nodes[0]
    try:
        settings = settings_for(cluster, tmp_path)

        def restart() -> None:
            broker.kill()
            time.sleep(3.0)
            broker.start()

        books = run(
            settings, tmp_path / "logs", count=COUNT // 2, rate=RATE, fault=restart,
            fault_after=COUNT // 8, settle_timeout_s=180.0,
        )  # fmt: skip
    finally:
        cluster.stop()
    print(books.report("1 broker, kill -9 and restart"))
    assert books.fault_at_s is not None
    # Writes sent while the only broker was down may fail; nothing acknowledged is lost.
    assert len(books.acked_interactions) >= COUNT // 4
    assert not books.unanswered, sorted(books.unanswered)[:10]
    assert not books.missing_labelled, sorted(books.missing_labelled)[:10]
    assert books.duplicated_labelled == 0
    # Recovery is bounded: no acknowledged interaction waits longer than this for its answer.
    assert books.longest_wait_s < 120, books.longest_wait_s
