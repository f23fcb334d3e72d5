"""Hostile traffic for the memory bounds (issue 24, item 9), and the RSS it costs.

The tests in ``test_bounded_memory.py`` drive the same traffic and assert the bounds on
entry counts; this module's ``main`` measures resident memory, one scenario per fresh
process (a process's RSS rarely shrinks, so scenarios must not share one)::

    .venv/bin/python -m tests.faults.memory_probe join --cap 100000
    .venv/bin/python -m tests.faults.memory_probe all  # each: uncapped, default, 10k

Traffic: ``join`` gives the join 100k unique interaction ids, each answered by serve and
never labelled; ``monitor`` and ``alerts`` give the monitor's entity table and the alert
detector 100k unique cashtags (one interaction, prediction and sighting each), with
``$AAPL`` mentioned every 100th record, a real entity that must survive.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from schemas.messages import Interaction, Prediction
from streams.alert_agent import AlertAgent
from streams.alerting import AlertBook
from streams.join import JoinConfig, JoinPartition
from streams.join_state import is_progress_key
from streams.sightings import Sighting
from streams.topology import Topology
from streamtune.core.settings import Settings
from streamtune.monitor.feed import new_state
from streamtune.monitor.state import MonitorState

N = 100_000
TS = 1_700_000_000_000
TASK = "tfns-sentiment"
#: The agent writes the join's changes to its changelog once per batch of about this many.
BATCH = 500
#: "No cap": far more than any scenario drives.
UNCAPPED = 10**9


def ticker(i: int) -> str:
    """A unique, valid cashtag body for ``i``: ``Z`` and ``i`` in base 36.

    >>> ticker(0), ticker(35), ticker(36), ticker(99_999)
    ('Z0', 'ZZ', 'Z10', 'Z255R')
    """
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        i, rest = divmod(i, 36)
        out = digits[rest] + out
        if i == 0:
            return "Z" + out


def text(i: int) -> str:
    """A post about a fresh cashtag; every 100th also names ``$AAPL``."""
    extra = " and $AAPL" if i % 100 == 0 else ""
    return f"${ticker(i)}{extra} to the moon, buy before the announcement #{i}"


def interaction(i: int) -> Interaction:
    return Interaction(interaction_id=f"h{i}", task=TASK, text=text(i), ts_ms=TS + i)


def prediction(i: int, label: int = 0) -> Prediction:
    probs = [0.1, 0.1, 0.1]
    probs[label] = 0.8
    return Prediction(
        interaction_id=f"h{i}", task=TASK, label=label, probs=probs, adapter_version="v1",
        model_id="m", latency_ms=1.0, ts_ms=TS + i,
    )  # fmt: skip


def join_entries(store: dict[str, Any]) -> int:
    """Join entries held (progress records left out)."""
    return sum(1 for key in store if not is_progress_key(key))


def hostile_join(settings: Settings, n: int = N) -> JoinPartition:
    """``n`` unique ids, answered and never labelled, through one partition's join."""
    part = JoinPartition(
        0,
        {},
        JoinConfig.from_settings(settings.join, frozenset({settings.alerts.task})),
        clock=lambda: TS + n,
    )
    for i in range(n):
        part.on_interaction(interaction(i), offset=i, ts_ms=TS + i)
        part.on_prediction(prediction(i), offset=i, ts_ms=TS + i)
        if i % BATCH == BATCH - 1:
            drain(part)
    drain(part)
    return part


def drain(part: JoinPartition) -> None:
    """What the agent does per batch: take the outputs, write the changes."""
    part.take_labelled()
    part.take_dead_letters()
    part.take_observations()
    part.take_paired()
    part.changes()


def hostile_monitor(settings: Settings, n: int = N) -> MonitorState:
    """``n`` unique cashtags, one interaction and its prediction each, through the monitor."""
    state = new_state(settings.monitor)
    state.clock = lambda: TS + n
    for i in range(n):
        msg = interaction(i)
        state.add("interactions", msg.interaction_id.encode(), msg.to_bytes(), msg.ts_ms)
        answer = prediction(i, label=i % 3)
        state.add("predictions", answer.interaction_id.encode(), answer.to_bytes(), answer.ts_ms)
    return state


def sightings(n: int = N) -> Iterator[Sighting]:
    for i in range(n):
        yield Sighting(ticker(i), f"h{i}", TASK, text(i), i % 3, 0.8, "v1", TS + i)
        if i % 100 == 0:
            yield Sighting("AAPL", f"h{i}", TASK, text(i), i % 3, 0.8, "v1", TS + i)


def hostile_alerts(settings: Settings, n: int = N) -> AlertAgent:
    """``n`` unique cashtags through the alert detector, swept as the agent sweeps."""
    agent = AlertAgent(Topology(settings, app=None))
    book = agent.book = AlertBook(agent.config, {}, clock=lambda: TS + n)
    for offset, sighting in enumerate(sightings(n)):
        book.observe(sighting, partition=0, offset=offset)
        if offset % BATCH == BATCH - 1:
            agent._maybe_evict(book, book.newest_ms)
            book.changes()
    agent._maybe_evict(book, book.newest_ms)
    book.changes()
    return agent


def rss_kib() -> int:
    """This process's resident set (``VmRSS``), KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


SCENARIOS = {
    # name: (run, setting of the cap, what is counted afterwards)
    "join": (hostile_join, "join_max_entries", lambda p: join_entries(p.store)),
    "monitor": (hostile_monitor, "monitor_max_entities", lambda s: len(s.entity_labels)),
    "alerts": (hostile_alerts, "alert_max_entities", lambda a: len(a.book.store)),
}


def measure(name: str, cap: int) -> str:
    """Run one scenario here; a line with the entries kept and the RSS growth."""
    run, setting, count = SCENARIOS[name]
    settings = Settings(**{setting: cap})
    gc.collect()
    before = rss_kib()
    result = run(settings)
    gc.collect()
    grown = rss_kib() - before
    cap_text = "none" if cap >= UNCAPPED else str(cap)
    return (
        f"{name:8} {setting}={cap_text:>7}: {count(result):>7} entries kept, "
        f"RSS +{grown / 1024:.1f} MiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--cap", type=int, default=None, help="default: the setting's default")
    args = parser.parse_args(argv)
    if args.scenario != "all":
        cap = (
            args.cap
            if args.cap is not None
            else Settings.model_fields[SCENARIOS[args.scenario][1]].default
        )
        print(measure(args.scenario, cap), flush=True)
        return 0
    for name, (_, setting, _) in SCENARIOS.items():
        default = Settings.model_fields[setting].default
        for cap in sorted({UNCAPPED, default, 10_000}, reverse=True):
            command = [sys.executable, "-m", "tests.faults.memory_probe", name, "--cap", str(cap)]
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
