"""The worker's composition root: one Faust app, its tables, agents and timers.

``streamtune worker`` runs :func:`create_app` with the settings. Faust's own command line
works too, reading the settings from ``STREAMTUNE_*``::

    faust -A streams.app worker -l info

Agents:

``join``
    interactions + predictions + feedback + join ticks -> ``labelled``, observations for the
    task agent, dead letters (:mod:`streams.join_agent`).
``tasks``
    observations, adapter announcements, ticks -> ``drift-events``, ``train-jobs``
    (:mod:`streams.task_agent`).
``adapters``
    ``model-updates`` -> adapter announcements for the task agent, which end a job in flight.
``alerts``
    entity sightings (live predictions re-keyed by entity by the join) -> ``alerts``, and the
    optional webhook, fed by a background task (:mod:`streams.alert_agent`).

Tables (memory store, recovered from their changelog topics on restart): ``join`` (join
state by interaction_id, plus one progress record per partition), ``tasks`` (one
:class:`~streams.windows.TaskState` per task: windows, offsets, counters, policy state) and
``alerts`` (one :class:`~streams.alerting.EntityState` per entity: window, baseline, surges).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from schemas import limits
from schemas.base import DecodeError
from schemas.codec import dead_letter, decode
from schemas.messages import AdapterChunk, AdapterManifest, DeadLetter, JobStatus
from schemas.tasks import known_tasks
from streams.alert_agent import AlertAgent
from streams.batching import BatchingApp
from streams.events import JOB_END_STATES, AdapterPublished, JobEnded, JoinTick
from streams.join_agent import JoinAgent
from streams.partition_guard import PartitionGuard
from streams.task_agent import TaskAgent, tick_events
from streams.topology import Topology, app_id, internal_topic_specs
from streams.webhook import WebhookConfig, WebhookSink
from streamtune.core.observability import Liveness, Metrics, observed
from streamtune.core.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Batches an agent takes at once, and how long it waits to fill a group.
GROUP_EVENTS = 64
GROUP_WAIT_S = 0.002


def create_app(settings: Settings | None = None) -> BatchingApp:
    """A Faust app running the worker's agents against the configured broker."""
    settings = settings or load_settings()
    # Logging is the process's (streamtune.core.logging_setup, role "worker"), not the app's.
    # Faust still makes a data folder (mkdir without parents); keep it in the cache, not
    # in the user's working copy.
    datadir = settings.cache_dir / "worker-data"
    datadir.mkdir(parents=True, exist_ok=True)
    app = BatchingApp(
        app_id(settings),
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        broker_client_id=settings.client_id,
        broker_request_timeout=settings.request_timeout_ms / 1000,
        broker_commit_interval=settings.worker_commit_interval_s,
        broker_max_poll_records=settings.worker_max_poll_records,
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.worker_session_timeout_s / 3),
        consumer_group_instance_id=settings.worker_instance_id,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=limits.MAX_MODEL_UPDATE_BYTES + 128 * 1024,
        producer_acks=-1,
        producer_max_request_size=limits.MAX_MODEL_UPDATE_BYTES + 128 * 1024,
        # The *table store* (the broker above is real Kafka): tables live in memory and are
        # rebuilt from their Kafka changelog topics on start-up; rocksdb is not a dependency.
        store="memory://",
        datadir=datadir / "{conf.name}",
        topic_partitions=settings.stream_partitions,
        topic_replication_factor=settings.replication_factor,
        # The agents write table state themselves; standbys would apply it to the same
        # memory store, so every worker recovers its partitions from the changelog instead.
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
        web_enabled=False,
    )
    topology = Topology(settings, app)
    # Keys and values are JSON (Faust's default codec); the agents write the changelog
    # records themselves, through streams.changelog, once per key per batch.
    topology.join_table = app.Table("join", partitions=settings.stream_partitions)
    topology.task_table = app.Table("tasks", partitions=settings.stream_partitions)
    topology.alert_table = app.Table("alerts", partitions=settings.stream_partitions)
    app.batched_topics = frozenset(
        {
            topology.interactions,
            topology.predictions,
            topology.feedback,
            topology.join_ticks,
            topology.task_events,
            topology.model_updates,
            topology.train_status,
            topology.entity_sightings,
        }
    )
    app.prepare = lambda: _create_topics(settings)
    _register(app, topology)
    return app


def run_worker(app: BatchingApp, loglevel: str = "info") -> None:
    """Run ``app`` in a Faust worker until it is stopped (Ctrl-C or SIGTERM)."""
    from faust.worker import Worker

    worker = Worker(app, loglevel=loglevel, quiet=True)
    # Faust's progress spinner sets the root logger to DEBUG so that it spins on every log
    # record; every library debug call then builds a record, about 20 us per message sent.
    worker.spinner = None
    worker.execute_from_commandline()


def _register(app: BatchingApp, t: Topology) -> None:
    join = JoinAgent(t)
    tasks = TaskAgent(t)
    metrics = Metrics()
    liveness = Liveness(t.settings.health_stall_s, metrics)

    def count_dead_letter(letter: DeadLetter) -> None:
        metrics.dead_letters.labels(code=letter.error).inc()
        metrics.events.labels(outcome="dead_lettered").inc()

    join.on_dead_letter = count_dead_letter

    def raw_topic(*names: str) -> Any:
        return app.topic(
            *names, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw"
        )

    # Each event is one fetched batch of one partition; take_events groups the batches that
    # are ready, so that the agents wait for the broker once per group.
    @app.agent(raw_topic(t.interactions, t.predictions, t.feedback, t.join_ticks), name="join")
    async def join_agent(stream: Any) -> None:
        async for events in stream.take_events(GROUP_EVENTS, within=GROUP_WAIT_S):
            await join.process([(e.message.topic, e.message.partition, e.value) for e in events])
            count = sum(len(e.value) for e in events)
            metrics.batch_size.observe(count)
            metrics.events.labels(outcome="joined").inc(count)
            liveness.record(count)

    @app.agent(raw_topic(t.task_events), name="tasks")
    async def task_agent(stream: Any) -> None:
        async for events in stream.take_events(GROUP_EVENTS, within=GROUP_WAIT_S):
            await tasks.process([(e.message.partition, e.value) for e in events])
            metrics.events.labels(outcome="task_events").inc(sum(len(e.value) for e in events))

    @app.agent(raw_topic(t.model_updates), name="adapters")
    async def adapter_agent(stream: Any) -> None:
        async for event in stream.events():
            await _announce_adapters(t, event.value)

    @app.agent(raw_topic(t.train_status), name="job-ends")
    async def job_end_agent(stream: Any) -> None:
        async for event in stream.events():
            await _announce_job_ends(t, event.value)

    @app.timer(t.settings.worker_tick_interval_s, on_leader=True)
    async def ticks() -> None:
        body = JoinTick(ts_ms=int(time.time() * 1000)).to_bytes()
        for partition in range(t.settings.stream_partitions):
            await app.producer.send(t.join_ticks, None, body, partition, None, None)
        for key, value in tick_events():
            await app.producer.send(t.task_events, key, value, None, None, None)

    # --- alerting: sightings -> alerts topic -> webhook (a queue and a task of its own) --
    alerts = AlertAgent(t)
    s = t.settings
    if s.alert_webhook_url:
        alerts.sink = WebhookSink(
            WebhookConfig(
                url=s.alert_webhook_url,
                token=s.webhook_token(),
                timeout_s=s.alert_webhook_timeout_s,
                retries=s.alert_webhook_retries,
                queue_size=s.alert_webhook_queue,
            ),
            alerts.undeliverable,
        )

        @app.task
        async def webhook() -> None:
            await alerts.sink.run()  # type: ignore[union-attr]

    @app.agent(raw_topic(t.entity_sightings), name="alerts")
    async def alert_agent(stream: Any) -> None:
        async for events in stream.take_events(GROUP_EVENTS, within=GROUP_WAIT_S):
            await alerts.process([(e.message.partition, e.value) for e in events])

    # --- end alerting -------------------------------------------------------------------

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        join.forget({tp.partition for tp in revoked if tp.topic == t.interactions})
        tasks.forget({tp.partition for tp in revoked if tp.topic == t.task_events})
        alerts.forget({tp.partition for tp in revoked if tp.topic == t.entity_sightings})

    @app.task
    async def observe() -> None:
        # /metrics and /healthz; liveness follows the group's lag on the joined inputs, and
        # a partition left unfetched while the others flow is re-armed.
        async with observed(
            t.settings,
            metrics,
            liveness,
            port=t.settings.worker_metrics_port,
            group_id=app_id(t.settings),
            topics=[t.interactions, t.predictions, t.feedback],
            on_stalls=PartitionGuard(
                app.consumer, liveness, t.settings.worker_partition_stall_s, metrics
            ),
            owned=app.consumer.assignment,
        ):
            await asyncio.Event().wait()  # until the worker stops and cancels this task

    app.join_runner, app.task_runner = join, tasks  # for tests and the status command
    app.metrics, app.liveness = metrics, liveness
    app.alert_runner = alerts


async def _announce_adapters(t: Topology, records: list[Any]) -> None:
    """Forward adapter manifests (keyed by task) to the task agent. Every record of
    model-updates is checked here once (the worker reads it in a consumer group; the serve
    and trainer followers each read all of it): a record that is no valid manifest or chunk
    for its key goes to dead-letter."""
    tasks = set(known_tasks())
    pending = []
    for record in records:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        if record.value is None and key in tasks:
            continue  # a tombstone on a task's key is a rollback to the base model
        message = _adapter_record(record, key)
        if isinstance(message, DeadLetter):
            log.warning("dead-lettering %s@%d: %s", record.topic, record.offset, message.reason)
            pending.append(
                await t.app.producer.send(
                    t.dead_letter,
                    message.source_topic.encode(),
                    message.to_bytes(),
                    None,
                    None,
                    None,
                )
            )
            continue
        if key not in tasks or not isinstance(message, AdapterManifest):
            continue  # chunks and history have keys of their own
        notice = AdapterPublished(
            task=message.task,
            version=message.version,
            job_id=message.job_id,
            created_ms=message.created_ts_ms,
        )
        pending.append(
            await t.app.producer.send(
                t.task_events, message.task.encode(), notice.to_bytes(), None, None, None
            )
        )
    for fut in pending:
        await fut


def _adapter_record(record: Any, key: str) -> AdapterManifest | AdapterChunk | DeadLetter:
    """A model-updates record as the message its key announces: ``TASK`` and ``TASK@VERSION``
    hold manifests, ``TASK@VERSION#I`` chunks; anything else is a dead letter."""
    chunk = "#" in key
    message = decode(
        AdapterChunk if chunk else AdapterManifest,
        record.value,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        max_bytes=limits.MAX_MODEL_UPDATE_BYTES + (0 if chunk else 64 * 1024),
    )
    if isinstance(message, DeadLetter):
        return message
    if isinstance(message, AdapterChunk):
        expected = f"{message.task}@{message.version}#{message.index}"
    else:
        expected = message.task if "@" not in key else f"{message.task}@{message.version}"
    if key == expected:
        return message
    return dead_letter(
        record.value,
        error="wrong_key",
        reason=f"a {type(message).__name__} that belongs under {expected!r} came under {key[:200]!r}",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
    )


async def _announce_job_ends(t: Topology, records: list[Any]) -> None:
    """Forward the end of a train job (finished, rejected or failed) to the task agent, so a
    job that produced no adapter leaves flight at once instead of after its timeout."""
    pending = []
    for record in records:
        try:
            status = JobStatus.from_bytes(record.value)
        except DecodeError:
            continue  # information only; the trainer validates what it writes
        if status.state not in JOB_END_STATES:
            continue
        for task in status.tasks:
            notice = JobEnded(task=task, job_id=status.job_id, state=status.state)
            pending.append(
                await t.app.producer.send(
                    t.task_events, task.encode(), notice.to_bytes(), None, None, None
                )
            )
    for fut in pending:
        await fut


async def _create_topics(settings: Settings) -> None:
    """Create streamtune's topics and the worker's own (idempotent), before Faust subscribes."""
    from streamtune.core.topic_admin import create_topics

    await create_topics(settings, settings.topic_specs() + internal_topic_specs(settings))


def _credentials(settings: Settings) -> Any:
    kwargs = settings.kafka_client_kwargs()
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.password(),
            mechanism=settings.sasl_mechanism,
            ssl_context=kwargs.get("ssl_context"),
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    return None


_APP: BatchingApp | None = None


def __getattr__(name: str) -> Any:
    # `faust -A streams.app` looks up `streams.app.app`: build it on first use, from the
    # environment, so that importing this module (tests, docs) connects to nothing.
    global _APP
    if name == "app":
        if _APP is None:
            # Under `faust -A streams.app worker` no streamtune entry point set the logging:
            # keep aiokafka's one line per message sent (DEBUG) off, as `streamtune worker` does.
            aiokafka = logging.getLogger("aiokafka")
            if aiokafka.level == logging.NOTSET:
                aiokafka.setLevel(logging.INFO)
            _APP = create_app()
        return _APP
    raise AttributeError(name)
