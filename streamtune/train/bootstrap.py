"""``streamtune bootstrap TASK``: train the task's first adapter from its seed data, gate it
against the seed probe, sign it and publish it, so that serving starts from a strong model.

Built once per machine (``models.bootstrap`` caches it by a hash of its inputs); publishing
is skipped when that exact version is already live on ``model-updates``. The first call on
a machine takes the adapter that ships with streamtune when the recipe is the default one
(``models.bootstrap.SHIPPED_DIR``), and trains it (once per machine) otherwise. Its manifest
carries its accuracy on the gate's anchor set, measured here (seconds, so the cache need not
hold it): the reference of the gate's anchor floor (``streamtune.train.reference``).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from transformers import PreTrainedModel

from models.base_encoder import locate_base_model
from models.bootstrap import Bootstrap, bootstrap_adapter, evaluate_file, write_shipped
from models.bootstrap import locate as locate_cached
from models.device import bf16_supported
from models.loader import LoadedBase, load_base
from models.seed import anchor_examples
from models.signing import load_signer
from models.training import Progress
from schemas.messages import SEED_VERSION
from schemas.tasks import get_task
from streamtune.core.clients import make_producer
from streamtune.core.settings import Settings
from streamtune.model_updates.follower import UpdatesFollower
from streamtune.model_updates.publisher import sign_and_publish
from streamtune.train.config import bootstrap_recipe, gate_rule, recipe_summary
from streamtune.train.reference import carried, carry

log = logging.getLogger(__name__)

#: Labelled files each task is evaluated on after bootstrapping (never trained on).
EVAL_FILES = {
    "tfns-sentiment": ("tfns/valid.csv", "text", "label"),
    "banking77-intent": ("banking77/test.csv", "text", "category"),
}


@dataclass(frozen=True)
class BootstrapReport:
    bootstrap: Bootstrap
    eval_accuracy: float | None
    seed_eval_accuracy: float | None
    published: bool
    shipped_to: Path | None = None  # the shipped record written (``--ship``)


def _eval_set(task: str, data_dir: Path) -> tuple[list[str], list[int]] | None:
    if task not in EVAL_FILES:
        return None
    name, text_col, label_col = EVAL_FILES[task]
    spec = get_task(task)
    with (data_dir / name).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = [
        int(r[label_col]) if r[label_col].isdigit() else spec.label_index(r[label_col])
        for r in rows
    ]
    return [r[text_col] for r in rows], labels


def build(
    settings: Settings, task: str, base: LoadedBase | None = None,
    on_progress: Callable[[Progress], None] | None = None, *, rebuild: bool = False,
) -> tuple[LoadedBase, Bootstrap]:  # fmt: skip
    """The task's bootstrap adapter: read from the cache, the shipped one, or trained now
    (``rebuild``: trained now whatever the cache holds)."""
    base = base or load_base(settings)
    spec, config = bootstrap_recipe(settings.train, base.encoder)
    result = bootstrap_adapter(
        base, task, spec=spec, config=config,
        cache_dir=settings.cache_dir, data_dir=settings.data_dir, gate=gate_rule(settings.gate),
        on_progress=on_progress, rebuild=rebuild,
    )  # fmt: skip
    return base, with_anchor_reference(settings, base, result)


def with_anchor_reference(settings: Settings, base: LoadedBase, result: Bootstrap) -> Bootstrap:
    """``result`` with its accuracy on the gate's anchor set (``STREAMTUNE_GATE_ANCHOR_SIZE``
    examples) in its metrics, the reference that the trainer's promotions carry forward."""
    texts, labels = anchor_examples(result.task, settings.data_dir, settings.gate_anchor_size)
    if carried(result.metrics, len(labels)) is not None:
        return result
    accuracy = evaluate_file(base, result.blob, result.task, texts, labels)
    return replace(result, metrics={**result.metrics, **carry(accuracy, len(labels))})


def locate(settings: Settings, task: str, encoder: PreTrainedModel) -> tuple[str, Path]:
    """The version of the adapter :func:`build` would produce, and its cache file (present
    once built), without building it: ``streamtune doctor`` looks for it."""
    spec, config = bootstrap_recipe(settings.train, encoder)
    model_id = locate_base_model(settings.base_model).model_id
    return locate_cached(
        task, model_id, spec=spec, config=config, cache_dir=settings.cache_dir,
        data_dir=settings.data_dir,
    )  # fmt: skip


async def live_version(settings: Settings, task: str) -> str:
    """The version live on ``model-updates`` for ``task`` (the seed model's when none is)."""
    follower = UpdatesFollower(settings, [task])
    await follower.start()
    try:
        update = (await follower.catch_up()).get(task)
    finally:
        await follower.stop()
    return update.manifest.version if update and update.manifest else SEED_VERSION


async def publish(settings: Settings, base: LoadedBase, result: Bootstrap) -> bool:
    """Sign and publish the bootstrap adapter unless it is live already; True if published."""
    if await live_version(settings, result.task) == result.version:
        return False
    producer = make_producer(settings)
    await producer.start()
    try:
        await sign_and_publish(
            producer, settings, load_signer(settings), task=result.task, version=result.version,
            blob=result.blob, base_model_id=base.model_id, num_labels=get_task(result.task).num_labels,
            parent_version=SEED_VERSION, metrics=result.metrics,
        )  # fmt: skip
    finally:
        await producer.stop()
    return True


def progress_bar(task: str) -> Callable[[Progress], None]:
    """A tqdm bar (with its ETA) on a terminal; otherwise a line every 10% of the steps, with
    the time left at the rate so far, so that a log never sits silent for minutes."""
    from tqdm import tqdm

    if sys.stderr.isatty():
        bar = tqdm(desc=f"bootstrap {task}", unit="step")

        def on_bar(p: Progress) -> None:
            bar.total = p.steps
            bar.update(1)
            bar.set_postfix(epoch=f"{p.epoch + 1}/{p.epochs}", ex_s=f"{p.examples_per_s:.0f}")

        return on_bar
    shown = [-1]
    began = time.monotonic()

    def on_line(p: Progress) -> None:
        tenth = 10 * p.step // p.steps
        if tenth > shown[0]:
            shown[0] = tenth
            left = (time.monotonic() - began) * (p.steps - p.step) / max(1, p.step)
            print(
                f"      bootstrap {task}: {10 * tenth}% (epoch {p.epoch + 1}/{p.epochs}, "
                f"{p.examples_per_s:.0f} examples/s, about {eta(left)} left)",
                flush=True,
            )

    return on_line


def eta(seconds: float) -> str:
    """A duration as a person reads it.

    >>> eta(42), eta(125), eta(3700)
    ('42 s', '2 min 5 s', '61 min 40 s')
    """
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"


def run(
    settings: Settings, task: str, *, publish_it: bool = True, evaluate: bool = True,
    rebuild: bool = False, ship: bool = False,
) -> BootstrapReport:  # fmt: skip
    """Build (or load), evaluate and publish the task's bootstrap adapter; ``ship`` (with
    ``rebuild``) also writes it as the shipped adapter (``models.bootstrap.SHIPPED_DIR``)."""
    get_task(task)
    if ship and not rebuild:
        raise ValueError("--ship needs --rebuild: only an adapter trained in this run is shipped")
    # A rebuild is a check, not a new version: the bytes it trains are neither cached nor
    # published under the name that the cached or shipped ones carry.
    publish_it = publish_it and not rebuild
    base, result = build(settings, task, on_progress=progress_bar(task), rebuild=rebuild)
    accuracy = seed_accuracy = None
    held = _eval_set(task, settings.data_dir) if evaluate else None
    if held is not None:
        accuracy = evaluate_file(base, result.blob, task, *held)
        seed_accuracy = evaluate_file(base, base.seed(task), task, *held)
    shipped_to = None
    if ship:
        spec, config = bootstrap_recipe(settings.train, base.encoder)
        precision = "bf16" if config.bf16 and bf16_supported(base.device) else "fp32"
        shipped_to = write_shipped(
            result,
            recipe=recipe_summary(spec, config),
            extra={
                "base_model": base.model_id,
                "built_on": f"{base.device.type} ({platform.processor() or platform.machine()})",
                "precision": precision,
                "eval_accuracy": None if accuracy is None else round(accuracy, 4),
                "seed_eval_accuracy": None if seed_accuracy is None else round(seed_accuracy, 4),
            },
        )
    published = asyncio.run(publish(settings, base, result)) if publish_it else False
    return BootstrapReport(result, accuracy, seed_accuracy, published, shipped_to)
