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

Each scenario runs under two feedback plans (``streamtune.scenario.feedback``): ``full``,
every event labelled 1 s later, and ``partial``, 30% of the events labelled 30 s later with
5% of the labels wrong. River, scheduled retraining and the oracle get the same labels at
the same positions in the stream as the live pipeline.

- ``oracle``: the LoRA job's own training recipe (``streamtune.train.stages.train_lora``)
  with unlimited time and no gate: from the shift on, retrained from the start adapter
  every ``ORACLE_EVERY`` labels that arrive, on every label that had arrived, and answering
  the events until the next retrain. What the labels could buy a system that waits for
  nothing.

Per scenario and plan it prints one JSON line. ``first_300_new_domain_acc_*``: the first
300 events of the new domain after the shift begins (in ``gradual`` most early post-shift
events are still the old domain). ``events_to_recover``: labelled events after the shift
until streamtune's rolling accuracy (over 100 events) is back within 2 points of its
pre-shift accuracy; when it never is, the number of labelled post-shift events, with
``recovered`` false. ``events_to_recover_return`` (``recurring``): events after the stream
returns to the old domain until the rolling accuracy there is within 2 points of pre-shift.
``anchor_loss_max_points``: the largest fall in anchor accuracy at one promotion;
``anchor_below_bootstrap_max_points``: how far the worst promoted adapter fell below the
start adapter on the anchor set. ``seconds_drift_to_adapted_answer``: from the first drift
event to the first answer served by an adapter trained after it.
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
from models.seed import anchor_examples, split_seed_data
from models.training import TaskData
from schemas.tasks import get_task
from streamtune.bench.river_baseline import make_model, prequential
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import delete_prefixed_topics
from streamtune.scenario.build import SHAPES, Scenario, build
from streamtune.scenario.feedback import PLANS, FeedbackPlan
from streamtune.scenario.prepare import ensure_signing_key, prepare
from streamtune.scenario.runner import (
    FEEDBACK_DELAY_S,
    TASK,
    Run,
    run_scenario,
    scenario_settings,
)
from streamtune.train.config import lora_spec, train_config
from streamtune.train.stages import Live, train_lora

RIVER_GRID = ("logreg-0.1", "logreg-0.5", "logreg-1.0", "nb-0.1", "nb-0.5", "nb-1.0")
ROLLING = 100
FIRST = 300  # "accuracy over the first 300 post-shift events"
IDEAL_EVERY = 10  # events between two refits of the ideal fast head
ORACLE_EVERY = 100  # labels arrived between two retrains of the oracle
NUM_LABELS = get_task(TASK).num_labels


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


def _river(
    settings: Settings, scenario: Scenario, given: list[int | None], delay: int
) -> tuple[str, list[bool], str, list[bool]]:
    """(config picked before the shift, its hits, config best after it, its hits)."""
    (texts, labels), _ = split_seed_data(TASK, settings.data_dir)
    warmup = list(zip(texts, labels, strict=True))
    stream = [(r.text, r.label) for r in scenario.rows]
    s = scenario.shift_at
    runs = {}
    for name in RIVER_GRID:
        kind, value = name.split("-")
        model = make_model(kind, float(value))
        runs[name] = prequential(model, warmup, stream, given=given, delay_events=delay)  # type: ignore[arg-type]
    picked = max(RIVER_GRID, key=lambda n: sum(runs[n][:s]))
    hindsight = max(RIVER_GRID, key=lambda n: sum(runs[n][s:]))
    return picked, runs[picked], hindsight, runs[hindsight]


def _oracle(
    settings: Settings, base: LoadedBase, start: Bootstrap, scenario: Scenario,
    given: list[int | None], delay: int, every: int = ORACLE_EVERY,
) -> list[bool]:  # fmt: skip
    """Hits of the oracle (see the module docstring) on the post-shift events: retrained
    every ``every`` labels that arrive after the shift."""
    s, rows = scenario.shift_at, scenario.rows
    spec, config = lora_spec(settings.train, base.encoder), train_config(settings.train)
    live = {TASK: Live(start.version, start.blob)}
    model = base.predictor(start.blob, task=TASK, version="oracle")
    hits: list[bool] = []
    segment: list[int] = []
    trained_on = 0

    def answer() -> None:
        if segment:
            predicted = model.predict([rows[i].text for i in segment])
            hits.extend(p.label == rows[i].label for p, i in zip(predicted, segment, strict=True))
            segment.clear()

    for i in range(s, len(rows)):
        arrived = [j for j in range(max(0, i - delay + 1)) if given[j] is not None]
        post = [j for j in arrived if j >= s]
        if len(post) >= trained_on + every:
            answer()
            pre = [j for j in arrived if j < s]
            order = post[::-1] + pre[::-1]  # the new regime first, newest first, as a job
            data = TaskData(
                TASK,
                NUM_LABELS,
                [rows[j].text for j in order],
                [given[j] for j in order],  # type: ignore[misc]
                fresh=len(post),
            )
            [blob], _ = train_lora(base, [data], live, spec=spec, config=config, warm_start=True)
            model = base.predictor(blob, task=TASK, version="oracle")
            trained_on = len(post)
        segment.append(i)
    answer()
    return hits


def _recover(hits: list[bool], start: int, target: float, until: int | None = None) -> int | None:
    """Events from ``start`` until the rolling accuracy is within 2 points of ``target``."""
    part = hits[start:until]
    for end in range(ROLLING, len(part) + 1):
        if sum(part[end - ROLLING : end]) / ROLLING >= target - 0.02:
            return end
    return None


def _first_new_domain(scenario: Scenario) -> list[int]:
    """Positions of the first ``FIRST`` events of the new domain from the shift on."""
    return [
        i
        for i in range(scenario.shift_at, len(scenario.rows))
        if scenario.domains[i] != scenario.domains[0]
    ][:FIRST]


def _return_span(scenario: Scenario) -> tuple[int, int] | None:
    """``recurring``: where the stream is back in the old domain, as [start, end)."""
    d, s = scenario.domains, scenario.shift_at
    back = next((i for i in range(s, len(d)) if d[i] == d[0]), None)
    if back is None:
        return None
    end = next((i for i in range(back, len(d)) if d[i] != d[0]), len(d))
    return back, end


def _anchor_figures(run: Run, start_anchor: float) -> tuple[float, float]:
    """(largest anchor fall at one promotion, largest fall below the start adapter), points."""
    loss, below = 0.0, 0.0
    for m in run.manifests:
        if m.version == run.start_version:  # the start adapter itself, published before
            continue
        new, old = (
            m.metrics.get("gate_anchor_new_accuracy"),
            m.metrics.get("gate_anchor_live_accuracy"),
        )
        if new is None or old is None:
            continue
        loss = max(loss, 100 * (old - new))
        below = max(below, 100 * (start_anchor - new))
    return round(loss, 2), round(below, 2)


def _pipeline(
    settings: Settings, scenario: Scenario, keys: Path, name: str, rate: float,
    base: LoadedBase | None, feedback: list[int | None], delay_s: float, **overrides: object,
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
            start_version=start.version, feedback=feedback, feedback_delay_s=delay_s,
        )  # fmt: skip
    finally:
        asyncio.run(delete_prefixed_topics(run_settings))
    return run, base, start


def run_scenario_bench(
    settings: Settings, shape: str, plan: FeedbackPlan, *, pre: int, rate: float, keys: Path,
    base: LoadedBase | None, oracle_every: int = ORACLE_EVERY,
) -> tuple[dict[str, object], LoadedBase]:  # fmt: skip
    scenario = build(settings.data_dir, shape, pre=pre)
    s = scenario.shift_at
    given = plan.labels(scenario.rows, num_labels=NUM_LABELS)
    delay = plan.delay_events(rate)
    river_name, river, hindsight_name, hindsight = _river(settings, scenario, given, delay)
    name = f"{shape}-{plan.name}"
    streamtune, base, start = _pipeline(
        settings, scenario, keys, name, rate, base, given, plan.delay_s
    )
    scheduled, _, _ = _pipeline(
        settings, scenario, keys, f"{name}-scheduled", rate, base, given, plan.delay_s,
        train_on_drift=False, train_fast_head=False,
    )  # fmt: skip
    # One predictor of the start adapter for both: the static model and the ideal head's features.
    start_model = base.predictor(start.blob, task=TASK, version="static")
    static = _static(start_model, scenario)
    ideal = _ideal_head(start_model, start, scenario, delay_events=round(FEEDBACK_DELAY_S * rate))
    oracle = _oracle(settings, base, start, scenario, given, delay, oracle_every)
    hits = streamtune.hits(scenario.rows, "adapt")
    sched = scheduled.hits(scenario.rows, "adapt")
    pre_acc = _mean(hits[:s]) or 0.0
    labelled_post = sum(g is not None for g in given[s:])
    recover = _recover(hits, s, pre_acc)
    back = _return_span(scenario) if shape == "recurring" else None
    new_domain = _first_new_domain(scenario)
    anchor_texts, anchor_labels = anchor_examples(
        TASK, settings.data_dir, settings.gate_anchor_size
    )
    start_anchor = _mean(
        [
            p.label == y
            for p, y in zip(start_model.predict(anchor_texts), anchor_labels, strict=True)
        ]
    )
    anchor_loss, anchor_below = _anchor_figures(streamtune, start_anchor or 0.0)

    def first_new(h: list[bool]) -> float | None:
        return _mean([h[i] for i in new_domain])

    return {
        "bench": "adapt",
        "scenario": shape,
        "feedback": plan.name,
        "feedback_fraction": plan.fraction,
        "feedback_delay_s": plan.delay_s,
        "label_noise": plan.noise,
        "events": len(scenario.rows),
        "shift_at": s,
        "labels_post_shift": labelled_post,
        "rate_per_s": rate,
        "start_version": start.version,
        "pre_shift_acc_static": _mean(static[:s]),
        "pre_shift_acc_streamtune": _mean(hits[:s]),
        "post_shift_acc_static": _mean(static[s:]),
        "post_shift_acc_streamtune": _mean(hits[s:]),
        "post_shift_acc_river": _mean(river[s:]),
        "post_shift_acc_river_best_hindsight": _mean(hindsight[s:]),
        "post_shift_acc_scheduled": _mean(sched[s:]),
        "post_shift_acc_oracle": _mean(oracle),
        "oracle_every_labels": oracle_every,
        "first_300_acc_static": _mean(static[s : s + FIRST]),
        "first_300_acc_streamtune": _mean(hits[s : s + FIRST]),
        "first_300_acc_river": _mean(river[s : s + FIRST]),
        "first_300_acc_scheduled": _mean(sched[s : s + FIRST]),
        "first_300_acc_ideal_head": _mean(ideal),
        "first_300_new_domain_acc_static": first_new(static),
        "first_300_new_domain_acc_streamtune": first_new(hits),
        "first_300_new_domain_acc_river": first_new(river),
        "first_300_new_domain_acc_scheduled": first_new(sched),
        "river_config": river_name,
        "river_best_hindsight_config": hindsight_name,
        "events_to_recover": recover if recover is not None else len(hits) - s,
        "recovered": recover is not None,
        "events_to_recover_return": (
            _recover(hits, back[0], pre_acc, until=back[1]) if back is not None else None
        ),
        "anchor_start_accuracy": start_anchor,
        "anchor_loss_max_points": anchor_loss,
        "anchor_below_bootstrap_max_points": anchor_below,
        "anchor_after_promotions": [
            m.metrics.get("gate_anchor_new_accuracy")
            for m in streamtune.manifests
            if m.version != streamtune.start_version
        ][:32],
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
    plans = [PLANS[args.feedback]] if getattr(args, "feedback", None) else list(PLANS.values())
    pre = getattr(args, "rows", None) or 400
    rate = getattr(args, "rate", None) or 10.0
    oracle_every = getattr(args, "oracle_every", None) or ORACLE_EVERY
    keys = Path(tempfile.mkdtemp(prefix="streamtune-adapt-"))
    lines, base = [], None
    for shape in shapes:
        for plan in plans:
            line, base = run_scenario_bench(
                settings,
                shape,
                plan,
                pre=pre,
                rate=rate,
                keys=keys,
                base=base,
                oracle_every=oracle_every,
            )
            lines.append(line)
    return lines
