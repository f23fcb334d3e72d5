"""Metrics and liveness for every long-running process: ``/metrics`` and ``/healthz``.

Each process (serve, worker, train, monitor) builds one :class:`Metrics` (its own registry,
so several in one test process never clash), one :class:`Liveness` fed by its consumer
group's lag, and serves both with :func:`serve_http`.

Liveness is about the failure Faust users meet most: a consumer that silently stops while
its input keeps growing. A process is unhealthy when its group has lag and it has not
processed a record for ``stall_after_s`` since the lag appeared; an idle process with
nothing to read stays healthy. It is also unhealthy when one input partition has lag and
its committed offset has not moved for that long, even while the others flow
(:class:`PartitionStalls`): a consumer that stops fetching one partition looks busy.

>>> m = Metrics()
>>> m.events.labels(outcome="answered").inc(3)
>>> m.set_live_adapter("tfns-sentiment", "v2")
>>> text = m.render().decode()
>>> 'streamtune_events_total{outcome="answered"} 3.0' in text
True
>>> 'streamtune_live_adapter_info{task="tfns-sentiment",version="v2"} 1.0' in text
True
>>> live = Liveness(stall_after_s=5.0)
>>> live.record(now=99.0)          # the last record processed
>>> live.observe_lag(0, now=100.0).healthy, live.observe_lag(12, now=101.0).healthy
(True, True)
>>> live.observe_lag(12, now=107.0).healthy     # lag for 6 s and nothing processed
False
>>> live.record(now=107.5); live.observe_lag(3, now=108.0).healthy
True
>>> with live.busy(limit_s=600):     # a train job holds its record for minutes
...     live.observe_lag(1, now=400.0).healthy
True
>>> live.record(now=500.0)       # records flow, but one partition has not moved for 9 s
>>> live.observe_lag(40, now=500.5, stalled=("feedback-1", 9.0)).reason
'stalled: feedback-1 has lag and its committed offset has not moved for 9s'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass

from aiohttp import web
from aiokafka import TopicPartition
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamtune.core import precision
from streamtune.core.clients import make_admin, make_consumer
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import topic_partitions

log = logging.getLogger(__name__)

#: Seconds, from a local answer (10 ms) to a slow one stuck behind a backlog (a minute).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Records per batch: powers of two up to the largest batch any process takes.
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))


class _PrecisionCollector(Collector):
    """The precision this process chose per device and the matrix-multiply times behind it,
    read at each scrape from what ``models.device`` recorded (nothing until it has run).

    >>> from streamtune.core.precision import PrecisionProbe
    >>> probe = PrecisionProbe("cpu", fp32_ms=8.1, bf16_ms=13.9, bf16_native=True, choice="fp32")
    >>> collector = _PrecisionCollector(lambda: [probe])
    >>> [(s.labels, s.value) for family in collector.collect() for s in family.samples]
    ... # doctest: +NORMALIZE_WHITESPACE
    [({'device': 'cpu', 'dtype': 'fp32'}, 8.1), ({'device': 'cpu', 'dtype': 'bf16'}, 13.9),
     ({'device': 'cpu', 'precision': 'fp32'}, 1.0)]
    """

    def __init__(
        self, probes: Callable[[], Iterable[precision.PrecisionProbe]] = precision.recorded
    ) -> None:
        self._probes = probes

    def collect(self) -> Iterator[Metric]:
        timings = GaugeMetricFamily(
            "streamtune_precision_probe_ms",
            "Median ms of the precision probe's matrix multiply, by device and dtype",
            labels=["device", "dtype"],
        )
        choice = GaugeMetricFamily(
            "streamtune_precision_choice_info",
            "1 for the precision measured as faster per device (serve_precision=auto, autocast)",
            labels=["device", "precision"],
        )
        for probe in self._probes():
            timings.add_metric([probe.device, "fp32"], probe.fp32_ms)
            if probe.bf16_ms is not None:
                timings.add_metric([probe.device, "bf16"], probe.bf16_ms)
            choice.add_metric([probe.device, probe.choice], 1.0)
        yield timings
        yield choice


class Metrics:
    """The metrics every streamtune process exposes; each uses the ones that apply to it."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter(
            "streamtune_events", "Records handled, by outcome", ["outcome"], registry=r
        )
        self.dead_letters = Counter(
            "streamtune_dead_letters", "Records sent to dead-letter, by code", ["code"], registry=r
        )
        self.swaps = Counter(
            "streamtune_adapter_swaps", "Adapters swapped in, by task", ["task"], registry=r
        )
        self.rejections = Counter(
            "streamtune_adapter_rejections",
            "Adapters rejected (verification or gate), by task and code",
            ["task", "code"],
            registry=r,
        )
        self.jobs = Counter(
            "streamtune_train_jobs", "Train job state changes, by state", ["state"], registry=r
        )
        self.alerts = Counter(
            "streamtune_alerts", "Financial-sentiment alerts, by kind", ["kind"], registry=r
        )
        self.latency = Histogram(
            "streamtune_end_to_end_latency_seconds",
            "From an interaction's record timestamp to its prediction",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "streamtune_batch_size_records",
            "Records per processed batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.live_adapter = Gauge(
            "streamtune_live_adapter_info",
            "1 for the adapter version live per task",
            ["task", "version"],
            registry=r,
        )
        self.lag = Gauge(
            "streamtune_consumer_lag_records",
            "Records not yet committed by a consumer group, over its input topics",
            ["group"],
            registry=r,
        )
        self.since_last = Gauge(
            "streamtune_seconds_since_last_record",
            "Seconds since this process last processed a record",
            registry=r,
        )
        self.rearms = Counter(
            "streamtune_partition_rearms",
            "Input partitions whose stalled fetch was re-armed, by topic",
            ["topic"],
            registry=r,
        )
        r.register(_PrecisionCollector())
        self._live: dict[str, str] = {}

    def set_live_adapter(self, task: str, version: str) -> None:
        """Mark ``version`` live for ``task`` (the previous one leaves the gauge)."""
        old = self._live.get(task)
        if old is not None and old != version:
            self.live_adapter.remove(task, old)
        self._live[task] = version
        self.live_adapter.labels(task=task, version=version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class Health:
    """What ``/healthz`` answers."""

    healthy: bool
    lag: int | None
    seconds_since_last_record: float
    stalled_for_s: float
    reason: str


class Liveness:
    """Tracks progress and input lag; unhealthy when lag waits ``stall_after_s`` unprocessed."""

    def __init__(self, stall_after_s: float = 60.0, metrics: Metrics | None = None) -> None:
        self.stall_after_s = stall_after_s
        self._limit = stall_after_s
        self._last = time.monotonic()
        self._lag_since: float | None = None
        self._health = Health(True, None, 0.0, 0.0, "starting")
        self._failed: str | None = None
        if metrics is not None:
            metrics.since_last.set_function(self.seconds_since_last)

    def record(self, count: int = 1, now: float | None = None) -> None:
        """Call after processing ``count`` records."""
        if count:
            self._last = time.monotonic() if now is None else now

    @contextlib.contextmanager
    def busy(self, limit_s: float) -> Iterator[None]:
        """A long piece of work (a train job) that holds its input: stalled only after
        ``limit_s`` without progress, instead of ``stall_after_s``."""
        self._limit = max(limit_s, self.stall_after_s)
        try:
            yield
        finally:
            self._limit = self.stall_after_s
            self.record()

    def seconds_since_last(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self._last

    def observe_lag(
        self,
        lag: int | None,
        now: float | None = None,
        stalled: tuple[str, float] | None = None,
    ) -> Health:
        """Update the verdict from a fresh lag sample (None: the broker did not answer).

        ``stalled`` is the input partition that has gone longest with lag and no committed
        progress, and for how many seconds (see :class:`PartitionStalls`).
        """
        now = time.monotonic() if now is None else now
        since = now - self._last
        if lag is None:
            self._health = Health(True, None, since, 0.0, "lag unknown (broker unreachable)")
            return self._health
        if lag <= 0:
            self._lag_since = None
            self._health = Health(True, lag, since, 0.0, "caught up")
            return self._health
        if self._lag_since is None:
            self._lag_since = now
        # Stalled: lag has waited, and nothing was processed, since the later of the two.
        idle = max(0.0, now - max(self._lag_since, self._last))
        if idle > self._limit:
            reason = f"stalled: lag {lag} and no record processed for {idle:.0f}s"
            self._health = Health(False, lag, since, idle, reason)
        elif stalled is not None and stalled[1] > self._limit:
            name, seconds = stalled
            reason = (
                f"stalled: {name} has lag and its committed offset has not moved for {seconds:.0f}s"
            )
            self._health = Health(False, lag, since, seconds, reason)
        else:
            self._health = Health(True, lag, since, idle, "consuming")
        return self._health

    def fail(self, reason: str) -> None:
        """A part of the process died that lag cannot show (such as following model-updates):
        unhealthy from now on, whatever the lag says."""
        self._failed = reason

    @property
    def health(self) -> Health:
        if self._failed is not None:
            h = self._health
            return Health(False, h.lag, h.seconds_since_last_record, h.stalled_for_s, self._failed)
        return self._health


class GroupLag:
    """A consumer group's lag on its input topics: log end minus committed offset.

    It reads the group's committed offsets from the broker, so it sees what the group really
    did, the same way for aiokafka and Faust consumers. Partitions the group never committed
    count from the log start.
    """

    def __init__(self, settings: Settings, group_id: str, topics: Iterable[str]) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = list(topics)
        self._consumer = make_consumer(settings, group_id=None)
        self._admin = make_admin(settings)
        self._started = False

    async def start(self) -> None:
        await self._consumer.start()
        await self._admin.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._consumer.stop()
            await self._admin.close()

    async def offsets(self) -> dict[TopicPartition, tuple[int, int]]:
        """``(done, end)`` per input partition: the group's next offset, and the log end."""
        tps: list[TopicPartition] = []
        for topic in self.topics:
            tps += await topic_partitions(self._consumer, topic)
        if not tps:
            return {}
        ends = await self._consumer.end_offsets(tps)
        starts = await self._consumer.beginning_offsets(tps)
        committed = await self._admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        out = {}
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            out[tp] = (max(done, starts[tp]), ends[tp])
        return out

    async def per_partition(self) -> dict[TopicPartition, int]:
        return {tp: max(0, end - done) for tp, (done, end) in (await self.offsets()).items()}

    async def total(self) -> int:
        return sum((await self.per_partition()).values())


class PartitionStalls:
    """Seconds each input partition has had lag while its committed offset stood still.

    >>> stalls = PartitionStalls()
    >>> p0, p1 = TopicPartition("feedback", 0), TopicPartition("feedback", 1)
    >>> stalls.update({p0: (10, 12), p1: (5, 9)}, now=100.0)
    {}
    >>> stalls.update({p0: (12, 15), p1: (5, 11)}, now=104.0)   # p0 moved, p1 did not
    {TopicPartition(topic='feedback', partition=1): 4.0}
    >>> stalls.update({p0: (15, 15), p1: (11, 11)}, now=106.0)  # both caught up
    {}
    """

    def __init__(self) -> None:
        self._since: dict[TopicPartition, tuple[int, float]] = {}

    def update(
        self, offsets: Mapping[TopicPartition, tuple[int, int]], now: float | None = None
    ) -> dict[TopicPartition, float]:
        now = time.monotonic() if now is None else now
        out = {}
        for tp, (done, end) in offsets.items():
            seen = self._since.get(tp)
            if done >= end or seen is None or seen[0] != done:
                self._since[tp] = (done, now)
                continue
            out[tp] = now - seen[1]
        return out


#: Called with each sample's stalled partitions (seconds each) and every partition's offsets.
OnStalls = Callable[
    [Mapping[TopicPartition, float], Mapping[TopicPartition, tuple[int, int]]], Awaitable[None]
]
#: The ``(topic, partition)`` pairs this process is assigned now (its consumer's assignment).
Owned = Callable[[], Iterable[tuple[str, int]]]


async def watch_lag(
    lag: GroupLag,
    liveness: Liveness,
    metrics: Metrics,
    stop: asyncio.Event,
    interval_s: float = 2.0,
    on_stalls: OnStalls | None = None,
    owned: Owned | None = None,
) -> None:
    """Sample ``lag`` every ``interval_s`` into the gauge and the liveness verdict; hand the
    partitions that stand still with lag to ``on_stalls``.

    Only partitions in ``owned()`` count as this process's stalls: in a group of replicas,
    a partition another replica holds is that replica's to report. Without ``owned``, no
    single partition counts (the total lag still does)."""
    stalls = PartitionStalls()
    while not stop.is_set():
        stalled: dict[TopicPartition, float] = {}
        try:
            offsets = await lag.offsets()
            value: int | None = sum(max(0, end - done) for done, end in offsets.values())
            metrics.lag.labels(group=lag.group_id).set(value or 0)
            mine = {(t, p) for t, p in owned()} if owned is not None else set()
            stalled = {
                tp: s
                for tp, s in stalls.update(offsets).items()
                if (tp.topic, tp.partition) in mine
            }
        except Exception as exc:  # a broker hiccup must not take the process down
            log.debug("lag sample failed: %s", exc)
            value = None
        worst = max(stalled.items(), key=lambda item: item[1], default=None)
        health = liveness.observe_lag(
            value,
            stalled=None if worst is None else (f"{worst[0].topic}-{worst[0].partition}", worst[1]),
        )
        if stalled and on_stalls is not None:
            try:
                await on_stalls(stalled, offsets)
            except Exception as exc:  # repair is best effort; /healthz still tells
                log.error("could not act on stalled partitions: %s", exc)
        if not health.healthy:
            log.warning("liveness: %s (group %s)", health.reason, lag.group_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def http_app(
    metrics: Metrics, liveness: Liveness | None = None, extra: web.RouteTableDef | None = None
) -> web.Application:
    """``/metrics`` (Prometheus text) and ``/healthz`` (200 or 503, JSON), plus ``extra``."""

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        health = liveness.health if liveness is not None else Health(True, None, 0.0, 0.0, "ok")
        return web.json_response(asdict(health), status=200 if health.healthy else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    if extra is not None:
        app.router.add_routes(extra)
    return app


@contextlib.asynccontextmanager
async def serve_http(
    app: web.Application,
    port: int,
    host: str = "127.0.0.1",
) -> AsyncIterator[web.AppRunner | None]:
    """Serve ``app`` on ``host:port`` while the block runs; port 0 serves nothing.

    ``host`` is ``Settings.http_host``: loopback unless the deployment opens it (a container
    whose port Prometheus scrapes or that is published). ``runner.addresses`` holds where it
    really listens. A port already taken is logged and skipped: monitoring never stops the
    stream.
    """
    if not port:
        yield None
        return
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.error("cannot serve /metrics and /healthz on %s:%d: %s", host, port, exc)
        await runner.cleanup()
        yield None
        return
    log.info("serving /metrics and /healthz on %s:%d", host, port)
    try:
        yield runner
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def observed(
    settings: Settings,
    metrics: Metrics,
    liveness: Liveness,
    *,
    port: int,
    group_id: str,
    topics: Iterable[str],
    on_stalls: OnStalls | None = None,
    owned: Owned | None = None,
) -> AsyncIterator[None]:
    """While the block runs: serve ``/metrics`` and ``/healthz`` and sample the group's lag
    (``on_stalls`` and ``owned``: see :func:`watch_lag`)."""
    stop = asyncio.Event()
    lag = GroupLag(settings, group_id, topics)
    watcher: asyncio.Task[None] | None = None
    async with serve_http(http_app(metrics, liveness), port, settings.http_host):
        try:
            try:
                await lag.start()
                watcher = asyncio.create_task(
                    watch_lag(
                        lag, liveness, metrics, stop, settings.health_interval_s, on_stalls, owned
                    )
                )
            except Exception as exc:  # no lag, no liveness verdict; the stream goes on
                log.error("cannot watch the lag of group %s: %s", group_id, exc)
            yield
        finally:
            stop.set()
            if watcher is not None:
                await watcher
            await lag.stop()
