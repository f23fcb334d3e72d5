"""``streamtune bench adapt``: prequential accuracy through the real processes, across shifts.

Each scenario (``abrupt``, ``gradual``, ``recurring``; see ``streamtune.scenario.build``) is
replayed through worker, serve and train on the local broker, starting from the task's
bootstrap adapter, with the default settings. Every system sees the same events in the same
order, and an unanswered event counts as wrong for every system:

- ``static``: the bootstrap adapter, never updated;
- ``river``: a River online text model that learns each labelled event right after
  predicting it (no feedback delay, which favours it), warmed up on the same seed data as
  the bootstrap adapter. Its configuration is picked from a small grid by prequential
  accuracy before the shift (what was known then); ``river_best_hindsight`` is the grid's
  best post-shift figure, picked with hindsight;
- ``scheduled``: the same processes with drift triggers and the fast head off: a LoRA job
  every ``window_size`` labels, the classic retrain-on-a-schedule baseline.

Over the first 300 post-shift events it also reports ``first_300_acc_ideal_head``: an ideal
fast path, for reference rather than as a rival. The start adapter's head is refitted
(``models.head_fit.fit_head``, as the fast path fits) before every 10 events on every label
that could have arrived by then (the feedback delay), with no gate and no latency. It shows
how much a new head could have bought from the labels known in time: where it barely beats
static, too few labels of the new domain had arrived for the fast path to gain much.

Per scenario it prints one JSON line. ``events_to_recover``: labelled events after the shift
until streamtune's rolling accuracy (over 100 events) is back within 2 points of its
pre-shift accuracy; null if it never is. ``seconds_drift_to_adapted_answer``: from the first
drift event to the first answer served by an adapter trained after it.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
from pathlib import Path

import torch

from models.bootstrap import Bootstrap
from models.device import resolve_device
from models.head_fit import fit_head, head_of
from models.inference import Predictor
from models.loader import LoadedBase
from models.seed import split_seed_data
from streamtune.bench.river_baseline import make_model, prequential
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import delete_prefixed_topics
from streamtune.scenario.build import SHAPES, Scenario, build
from streamtune.scenario.prepare import ensure_signing_key, prepare
from streamtune.scenario.runner import (
    FEEDBACK_DELAY_S,
    TASK,
    Run,
    run_scenario,
    scenario_settings,
)

RIVER_GRID = ("logreg-0.1", "logreg-0.5", "logreg-1.0", "nb-0.1", "nb-0.5", "nb-1.0")
ROLLING = 100
FIRST = 300  # "accuracy over the first 300 post-shift events"
IDEAL_EVERY = 10  # events between two refits of the ideal fast head


def _mean(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _static(predictor: Predictor, scenario: Scenario) -> list[bool]:
    predicted = predictor.predict([r.text for r in scenario.rows])
    return [p.label == r.label for p, r in zip(predicted, scenario.rows, strict=True)]


def _ideal_head(
    predictor: Predictor, start: Bootstrap, scenario: Scenario, *, delay_events: int
) -> list[bool]:
    """Hits of the ideal fast path (see the module docstring) on the first ``FIRST``
    post-shift events: before every ``IDEAL_EVERY`` events, a head fitted on the start
    adapter's features of every event whose label had arrived (``delay_events`` or more
    older)."""
    s = scenario.shift_at
    rows = scenario.rows[: s + FIRST]
    features = predictor.embed([r.text for r in rows])
    labels: list[int] = [r.label for r in rows]  # type: ignore[misc]
    prior = head_of(start.blob)
    hits: list[bool] = []
    for block in range(s, len(rows), IDEAL_EVERY):
        known = max(0, block - delay_events + 1)
        head = (
            fit_head(features[:known], labels[:known], len(prior.bias), prior=prior)
            if known
            else prior  # no label has arrived yet
        )
        answers = head.logits(features[block : block + IDEAL_EVERY]).argmax(-1).tolist()
        hits += [a == y for a, y in zip(answers, labels[block : block + IDEAL_EVERY], strict=True)]
    return hits


def _river(settings: Settings, scenario: Scenario) -> tuple[str, list[bool], str, list[bool]]:
    """(config picked before the shift, its hits, config best after it, its hits)."""
    (texts, labels), _ = split_seed_data(TASK, settings.data_dir)
    warmup = list(zip(texts, labels, strict=True))
    stream = [(r.text, r.label) for r in scenario.rows]
    s = scenario.shift_at
    runs = {}
    for name in RIVER_GRID:
        kind, value = name.split("-")
        runs[name] = prequential(make_model(kind, float(value)), warmup, stream)  # type: ignore[arg-type]
    picked = max(RIVER_GRID, key=lambda n: sum(runs[n][:s]))
    hindsight = max(RIVER_GRID, key=lambda n: sum(runs[n][s:]))
    return picked, runs[picked], hindsight, runs[hindsight]


def _events_to_recover(hits: list[bool], shift_at: int, target: float) -> int | None:
    post = hits[shift_at:]
    for end in range(ROLLING, len(post) + 1):
        if sum(post[end - ROLLING : end]) / ROLLING >= target - 0.02:
            return end
    return None


def _pipeline(
    settings: Settings, scenario: Scenario, keys: Path, name: str, rate: float,
    base: LoadedBase | None, **overrides: object,
) -> tuple[Run, LoadedBase, Bootstrap]:  # fmt: skip
    run_settings = ensure_signing_key(
        scenario_settings(
            settings, topic_prefix=f"bench-adapt-{name}-{secrets.token_hex(3)}-", **overrides
        ),
        keys,
    )
    try:
        base, start = prepare(run_settings, TASK, base)
        run = run_scenario(
            run_settings, scenario, keys / "logs" / name, rate=rate, settle_s=60.0,
            start_version=start.version,
        )  # fmt: skip
    finally:
        asyncio.run(delete_prefixed_topics(run_settings))
    return run, base, start


def run_scenario_bench(
    settings: Settings, shape: str, *, pre: int, rate: float, keys: Path, base: LoadedBase | None
) -> tuple[dict[str, object], LoadedBase]:
    scenario = build(settings.data_dir, shape, pre=pre)
    s = scenario.shift_at
    river_name, river, hindsight_name, hindsight = _river(settings, scenario)
    streamtune, base, start = _pipeline(settings, scenario, keys, shape, rate, base)
    scheduled, _, _ = _pipeline(
        settings, scenario, keys, f"{shape}-scheduled", rate, base,
        train_on_drift=False, train_fast_head=False,
    )  # fmt: skip
    # One predictor of the start adapter for both: the static model and the ideal head's features.
    start_model = base.predictor(start.blob, task=TASK, version="static")
    static = _static(start_model, scenario)
    ideal = _ideal_head(start_model, start, scenario, delay_events=round(FEEDBACK_DELAY_S * rate))
    hits = streamtune.hits(scenario.rows, "adapt")
    sched = scheduled.hits(scenario.rows, "adapt")
    pre_acc = _mean(hits[:s]) or 0.0
    return {
        "bench": "adapt",
        "scenario": shape,
        "events": len(scenario.rows),
        "shift_at": s,
        "rate_per_s": rate,
        "start_version": start.version,
        "pre_shift_acc_static": _mean(static[:s]),
        "pre_shift_acc_streamtune": _mean(hits[:s]),
        "post_shift_acc_static": _mean(static[s:]),
        "post_shift_acc_streamtune": _mean(hits[s:]),
        "post_shift_acc_river": _mean(river[s:]),
        "post_shift_acc_river_best_hindsight": _mean(hindsight[s:]),
        "post_shift_acc_scheduled": _mean(sched[s:]),
        "first_300_acc_static": _mean(static[s : s + FIRST]),
        "first_300_acc_streamtune": _mean(hits[s : s + FIRST]),
        "first_300_acc_river": _mean(river[s : s + FIRST]),
        "first_300_acc_scheduled": _mean(sched[s : s + FIRST]),
        "first_300_acc_ideal_head": _mean(ideal),
        "river_config": river_name,
        "river_best_hindsight_config": hindsight_name,
        "events_to_recover": _events_to_recover(hits, s, pre_acc),
        "seconds_drift_to_adapted_answer": streamtune.seconds_drift_to_adapted_answer(),
        "adapters_promoted": streamtune.promoted,
        "adapters_rejected": streamtune.rejected,
        "jobs_superseded": streamtune.superseded,
        "train_jobs": streamtune.jobs,
        "scheduled_adapters_promoted": scheduled.promoted,
        "drift_events": len(streamtune.drift_events),
        "answered": sum(
            p is not None for p in (streamtune.answer("adapt", r) for r in scenario.rows)
        ),
        "versions_served": len({p.adapter_version for p in streamtune.predictions.values()}),
        "seconds": round(streamtune.seconds, 1),
        "device": str(resolve_device(settings))
        + (" (" + torch.cuda.get_device_name() + ")" if torch.cuda.is_available() else ""),
    }, base


def run(settings: Settings, args: argparse.Namespace) -> list[dict[str, object]]:
    shapes = [args.scenario] if getattr(args, "scenario", None) else list(SHAPES)
    pre = getattr(args, "rows", None) or 400
    rate = getattr(args, "rate", None) or 10.0
    keys = Path(tempfile.mkdtemp(prefix="streamtune-adapt-"))
    lines, base = [], None
    for shape in shapes:
        line, base = run_scenario_bench(settings, shape, pre=pre, rate=rate, keys=keys, base=base)
        lines.append(line)
    return lines
