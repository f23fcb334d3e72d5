"""``streamtune bench adapt``: prequential accuracy through the real pipeline, across a shift.

The scenario (``streamtune.scenario.build``) is replayed through worker, serve and train on a
local broker. Two baselines see the same stream in the same order:

- the static model: the base model streamtune starts from, never updated;
- a River online text model that learns one labelled event at a time (test, then train),
  warmed up on the same seed data as the base model. Its configuration is chosen from a
  small grid by prequential accuracy before the shift: tuned on what was known then, as
  streamtune's settings were.

``events_to_recover``: labelled events after the shift until streamtune's rolling accuracy
(over 100 events) is back within 2 points of its pre-shift accuracy; null if it never is.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
from pathlib import Path

import torch

from models.device import resolve_device
from models.loader import load_base
from models.seed import seed_examples
from models.signing import generate_keypair
from streamtune.bench.river_baseline import make_model, prequential
from streamtune.core.settings import Settings
from streamtune.core.topic_admin import create_topics, delete_prefixed_topics
from streamtune.scenario.build import Scenario, build
from streamtune.scenario.runner import TASK, run_scenario, scenario_settings

RIVER_GRID = ("logreg-0.1", "logreg-0.5", "logreg-1.0", "nb-0.1", "nb-0.5", "nb-1.0")
ROLLING = 100


def _mean(values: list[bool | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def _static(settings: Settings, scenario: Scenario) -> list[bool]:
    base = load_base(settings)
    predicted = base.predictor(base.seed(TASK), task=TASK, version="static").predict(
        [r.text for r in scenario.rows]
    )
    return [p.label == r.label for p, r in zip(predicted, scenario.rows, strict=True)]


def _river(settings: Settings, scenario: Scenario) -> tuple[str, list[bool]]:
    texts, labels = seed_examples(TASK, settings.data_dir)
    warmup = list(zip(texts, labels, strict=True))
    stream = [(r.text, r.label) for r in scenario.rows]
    best: tuple[float, str, list[bool]] = (-1.0, "", [])
    for name in RIVER_GRID:
        kind, value = name.split("-")
        hits = prequential(make_model(kind, float(value)), warmup, stream)
        pre = sum(hits[: scenario.shift_at]) / scenario.shift_at
        if pre > best[0]:
            best = (pre, name, hits)
    return best[1], best[2]


def _events_to_recover(hits: list[bool | None], shift_at: int, target: float) -> int | None:
    post = [h for h in hits[shift_at:]]
    for end in range(ROLLING, len(post) + 1):
        window = [h for h in post[end - ROLLING : end] if h is not None]
        if window and sum(window) / len(window) >= target - 0.02:
            return end
    return None


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    scenario = build(settings.data_dir, pre=getattr(args, "rows", None) or 400)
    keys = Path(tempfile.mkdtemp(prefix="streamtune-adapt-"))
    private, _ = generate_keypair(keys / "trusted" / "trainer")
    # The baselines first: quick, and a failure there should not waste a pipeline run.
    static = _static(settings, scenario)
    river_name, river = _river(settings, scenario)
    rate = getattr(args, "rate", None) or 5.0
    run_settings = scenario_settings(
        settings, topic_prefix=f"bench-adapt-{secrets.token_hex(3)}-",
        signing_key_file=private, trusted_keys_dir=keys / "trusted",
    )  # fmt: skip
    asyncio.run(create_topics(run_settings))
    try:
        result = run_scenario(run_settings, scenario, keys / "logs", rate=rate, settle_s=10.0)
    finally:
        asyncio.run(delete_prefixed_topics(run_settings))
    hits = result.hits(scenario, "adapt")
    s = scenario.shift_at
    pre_acc = _mean(hits[:s])
    return {
        "bench": "adapt",
        "events": len(scenario.rows),
        "shift_at": s,
        "rate_per_s": rate,
        "pre_shift_acc_static": _mean(static[:s]),
        "post_shift_acc_static": _mean(static[s:]),
        "pre_shift_acc_streamtune": pre_acc,
        "post_shift_acc_streamtune": _mean(hits[s:]),
        "pre_shift_acc_river": _mean(river[:s]),
        "post_shift_acc_river": _mean(river[s:]),
        "river_config": river_name,
        "events_to_recover": _events_to_recover(hits, s, pre_acc or 0.0),
        "adapters_promoted": result.promoted,
        "adapters_rejected": result.rejected,
        "train_jobs": result.jobs,
        "drift_events": len(result.drift_events),
        "first_drift_at": min((e.position for e in result.drift_events), default=None),
        "answered": sum(h is not None for h in hits),
        "versions_served": sorted({p.adapter_version for p in result.predictions.values()}),
        "seconds": round(result.seconds, 1),
        "device": str(resolve_device(settings))
        + (" (" + torch.cuda.get_device_name() + ")" if torch.cuda.is_available() else ""),
    }
