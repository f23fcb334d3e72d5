"""Load for the fault tests: interactions and feedback at a steady rate into the whole service
(worker, serve and train as child processes), with a fault injected in the middle.

It keeps exact books: which records the broker acknowledged, when each interaction was sent
and when its first prediction arrived, what landed on ``labelled``, and samples of the state
each process holds (join entries, windows, RSS), so a test can count what was lost, what was
duplicated, the longest stall and whether memory stayed bounded.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from schemas import Feedback, Interaction, LabelledExample
from schemas.fields import now_ms
from schemas.topics import FEEDBACK, INTERACTIONS, LABELLED, TRAIN_JOBS
from streams.events import JOB_END_STATES
from streams.status import worker_status
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.core.topic_reader import read_topic
from streamtune.local_service import LocalService
from streamtune.scenario.collector import PredictionCollector
from tests.conftest import DATA
from tests.trainer_helpers import csv_rows, statuses
from tests.worker_helpers import FAST

TASK = "tfns-sentiment"

#: Service settings for fault runs: quick commits and ticks, one task, cheap LoRA jobs.
SERVICE = {
    **FAST,
    "serve_tasks": TASK,
    "window_size": 1000,  # one train job, late in the run: the trainer must take it up
    "train_min_examples": 200,
    "train_cooldown_s": 0.0,
    "train_epochs": 1,
    "train_lora_r": 4,
    "train_lora_targets": "query,value",
    "train_max_length": 32,
    "train_validation_fraction": 0.0,
    "gate_anchor_size": 50,
    "worker_instance_id": None,
}


def free_port_block(count: int, low: int = 33000, high: int = 40000) -> int:
    """The first of ``count`` consecutive free ports."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(low, high - count)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no block of free ports found")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Sample:
    """What the processes held at one moment of the run."""

    at_s: float
    sent: int
    join_entries: int
    windows: int  # open + closed + kept-for-rehearsal windows of the task
    task_state_bytes: int
    rss_mb: dict[str, float]
    jobs_ended: int = 0  # train jobs the trainer had reported ended by then


#: Extra state probes, by name: ``async (settings) -> int``. The alerting agent's state
#: (entities tracked, alert windows) plugs in here and is reported with the others.
STATE_PROBES: dict[str, Callable[[Settings], Awaitable[int]]] = {}


@dataclass
class Books:
    """Exact accounts of one run."""

    sent_at: dict[str, float] = field(default_factory=dict)
    acked_interactions: set[str] = field(default_factory=set)
    acked_feedback: set[str] = field(default_factory=set)
    failed_sends: int = 0
    answered_at: dict[str, float] = field(default_factory=dict)
    labelled: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: list[Sample] = field(default_factory=list)
    fault_at_s: tuple[float, float] | None = (
        None  # (fault began, fault ended), seconds into the run
    )
    pids: dict[str, int] = field(default_factory=dict)
    job_outcomes: dict[str, str] = field(default_factory=dict)
    jobs: int = 0
    seconds: float = 0.0
    read_answers: int = 0
    #: Why a sample could not be taken (the broker mid-fault, a table not written yet).
    sample_errors: list[str] = field(default_factory=list)

    @property
    def unanswered(self) -> set[str]:
        return self.acked_interactions - set(self.answered_at)

    @property
    def missing_labelled(self) -> set[str]:
        return (self.acked_interactions & self.acked_feedback) - set(self.labelled)

    @property
    def duplicated_labelled(self) -> int:
        return sum(n - 1 for n in self.labelled.values() if n > 1)

    @property
    def longest_wait_s(self) -> float:
        """The longest an acknowledged interaction waited for its answer."""
        return max(
            (self.answered_at[i] - self.sent_at[i] for i in self.answered_at if i in self.sent_at),
            default=0.0,
        )

    def longest_gap_s(self) -> float:
        """The longest pause between two answers while load was flowing."""
        times = sorted(self.answered_at.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def report(self, name: str) -> str:
        accounts = (
            f"[{name}] sent {len(self.sent_at)}, acknowledged {len(self.acked_interactions)} "
            f"interactions + {len(self.acked_feedback)} feedback ({self.failed_sends} sends failed); "
            f"unanswered {len(self.unanswered)}, labelled missing {len(self.missing_labelled)}, "
            f"labelled duplicated {self.duplicated_labelled}; longest wait for an answer "
            f"{self.longest_wait_s:.1f}s, longest gap between answers {self.longest_gap_s():.1f}s; "
            f"fault {self.fault_at_s}; jobs {self.jobs} -> {sorted(self.job_outcomes.values())}; "
            f"{self.seconds:.0f}s"
        )
        failed = f"; {len(self.sample_errors)} samples failed" if self.sample_errors else ""
        if self.sample_errors:
            failed += f" (last: {self.sample_errors[-1]})"
        if not self.samples:
            return f"{accounts}; no sample of the worker's state{failed}"
        first, last = self.samples[len(self.samples) // 4], self.samples[-1]
        rss = ", ".join(
            f"{role} {min(s.rss_mb[role] for s in self.samples):.0f}->{max(s.rss_mb[role] for s in self.samples):.0f} MB"
            for role in last.rss_mb
        )
        return (
            f"{accounts}; join entries {first.join_entries}->{last.join_entries} "
            f"(max {max(s.join_entries for s in self.samples)}), windows {last.windows}, "
            f"task state {last.task_state_bytes} B; RSS {rss}{failed}"
        )


def service_settings(
    settings: Settings, key_file: Path, trusted_dir: Path, **extra: object
) -> Settings:
    return Settings(
        **{
            **settings.model_dump(),
            **SERVICE,
            "signing_key_file": key_file,
            "trusted_keys_dir": trusted_dir,
            # Groups of their own: replicas of other runs on a shared broker never join them.
            "serve_group_id": f"{settings.topic_prefix}serve",
            "train_group_id": f"{settings.topic_prefix}train",
            **extra,
        }
    )


async def drive(
    settings: Settings,
    service: LocalService,
    *,
    count: int,
    rate: float,
    fault: Callable[[], None] | None = None,
    fault_after: int = 0,
    stream_span_s: float = 0.0,
    settle_timeout_s: float = 240.0,
    sample_every_s: float = 5.0,
    min_jobs: int = 0,
    job_end_timeout_s: float = 0.0,
) -> Books:
    """Send ``count`` interactions (each with its feedback) at ``rate``/s; run ``fault`` (in a
    thread) after ``fault_after`` of them; wait until every acknowledged interaction is answered
    and labelled; keep the books. ``stream_span_s`` spreads the record timestamps over that much
    stream time (an accelerated replay), starting now. With ``job_end_timeout_s``, then wait up
    to that long for every train job to reach an end state (``JOB_END_STATES``)."""
    rows = csv_rows(DATA / "tfns" / "valid.csv")
    books = Books(pids={role: child.proc.pid for role, child in service.children.items()})
    collector = PredictionCollector(settings)
    await collector.start()
    producer = make_producer(settings)
    await producer.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    fault_task: asyncio.Future[None] | None = None
    pending: list[asyncio.Future[object]] = []

    def mark(ids: set[str], key: str) -> Callable[[asyncio.Future[object]], None]:
        def done(fut: asyncio.Future[object]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                books.failed_sends += 1
            else:
                ids.add(key)

        return done

    async def run_fault() -> None:
        start = loop.time() - began
        await asyncio.to_thread(fault)  # type: ignore[arg-type]
        books.fault_at_s = (round(start, 1), round(loop.time() - began, 1))

    async def sampler() -> None:
        while True:
            await sample(settings, service, books, loop.time() - began)
            await asyncio.sleep(sample_every_s)

    sampling = asyncio.create_task(sampler())
    try:
        base_ts = now_ms()
        for i in range(count):
            if fault is not None and i == fault_after:
                fault_task = asyncio.ensure_future(run_fault())
            ahead = began + i / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
            service.check()
            iid = f"load-{i}"
            text, label = rows[i % len(rows)]
            ts = base_ts + int(stream_span_s * 1000 * i / count)
            itx = Interaction(interaction_id=iid, task=TASK, text=text, ts_ms=ts)
            fb = Feedback(interaction_id=iid, task=TASK, label=label, ts_ms=ts, source="load")
            books.sent_at[iid] = loop.time()
            for topic, msg, ids in (
                (INTERACTIONS, itx, books.acked_interactions),
                (FEEDBACK, fb, books.acked_feedback),
            ):
                try:
                    fut = await producer.send(
                        settings.topic(topic), msg.to_bytes(), key=iid.encode(), timestamp_ms=ts
                    )
                except Exception:
                    books.failed_sends += 1
                    continue
                fut.add_done_callback(mark(ids, iid))
                pending.append(fut)
            note_answers(books, collector)
        await asyncio.gather(*pending, return_exceptions=True)
        if fault_task is not None:
            await fault_task
        deadline = loop.time() + settle_timeout_s
        while loop.time() < deadline:
            service.check()
            note_answers(books, collector)
            if not books.unanswered:
                await read_labelled(settings, books)
                if not books.missing_labelled:
                    break
            await asyncio.sleep(1.0)
        await wait_for_jobs(
            settings, service, books, min_jobs, deadline=loop.time() + settle_timeout_s
        )
        if job_end_timeout_s > 0:
            await wait_for_job_ends(settings, service, books, loop.time() + job_end_timeout_s)
        await sample(settings, service, books, loop.time() - began)
        await read_labelled(settings, books)
    finally:
        sampling.cancel()
        await producer.stop()
        await collector.stop()
    books.seconds = loop.time() - began
    return books


def note_answers(books: Books, collector: PredictionCollector) -> None:
    """The first answer of each interaction, on the event loop's clock (as ``sent_at``)."""
    for at, prediction in collector.received[books.read_answers :]:
        books.answered_at.setdefault(prediction.interaction_id, at)
    books.read_answers = len(collector.received)


async def read_labelled(settings: Settings, books: Books) -> None:
    records = await read_topic(settings, settings.topic(LABELLED), timeout_s=60)
    books.labelled = collections.Counter(
        LabelledExample.from_bytes(r.value).interaction_id for r in records
    )


async def wait_for_jobs(
    settings: Settings, service: LocalService, books: Books, min_jobs: int, deadline: float
) -> None:
    """The trainer took up every train job the worker emitted (it reported on each): it
    carried on through the fault. Waiting for the outcome would time LoRA on a busy CPU."""
    loop = asyncio.get_running_loop()
    while True:
        service.check()
        books.jobs = len(await read_topic(settings, settings.topic(TRAIN_JOBS), timeout_s=60))
        ends = await statuses(settings, timeout_s=60)
        books.job_outcomes = {s.job_id: s.state for s in ends}  # the latest state of each
        if books.jobs >= min_jobs and len(books.job_outcomes) >= books.jobs:
            return
        if loop.time() > deadline:
            return
        await asyncio.sleep(2.0)


async def wait_for_job_ends(
    settings: Settings, service: LocalService, books: Books, deadline: float
) -> None:
    """Every train job the worker emitted has reached an end state (finished, rejected,
    superseded or failed), or ``deadline`` passed; ``books.job_outcomes`` holds the latest."""
    loop = asyncio.get_running_loop()
    while True:
        service.check()
        books.jobs = len(await read_topic(settings, settings.topic(TRAIN_JOBS), timeout_s=60))
        reports = await statuses(settings, timeout_s=60)
        books.job_outcomes = {s.job_id: s.state for s in reports}
        ended = [state for state in books.job_outcomes.values() if state in JOB_END_STATES]
        if books.jobs and len(ended) >= books.jobs:
            return
        if loop.time() > deadline:
            return
        await asyncio.sleep(5.0)


async def sample(settings: Settings, service: LocalService, books: Books, at_s: float) -> None:
    try:
        status = await worker_status(settings)
    except Exception as exc:  # a table not written yet, or the broker mid-fault
        books.sample_errors.append(f"{at_s:.0f}s {type(exc).__name__}: {exc}")
        return
    state = status["tasks"].get(TASK)
    windows = 0
    size = 0
    if state is not None:
        windows = len(state.closed) + len(state.history) + (1 if state.open else 0)
        size = len(orjson.dumps(state.to_dict()))
    rss = {}
    for role, child in service.children.items():
        try:
            rss[role] = rss_mb(child.proc.pid)
        except OSError:
            rss[role] = 0.0
    for name, probe in STATE_PROBES.items():
        rss[f"probe:{name}"] = float(await probe(settings))
    try:
        reports = await statuses(settings, timeout_s=10)
        ended = len({job.job_id for job in reports if job.state in JOB_END_STATES})
    except Exception:  # the broker mid-fault: as many as the last sample saw
        ended = books.samples[-1].jobs_ended if books.samples else 0
    books.samples.append(
        Sample(
            round(at_s, 1),
            len(books.sent_at),
            status["join_entries"],
            windows,
            size,
            rss,
            ended,
        )
    )
