"""``streamtune bench poison``: a feedback source flips 30% of its labels; does the per-source
trust estimate keep the adapter as good as one trained on clean feedback?

TFNS train rows (less the gate's anchor rows) are dealt to three feedback sources (``desk-a``, ``desk-b``, ``desk-c``);
``desk-c`` flips 30% of its labels to another label. Each example carries the seed model's
prediction, as the worker's join gives it. Four adapters train from the same seed head with
the same settings, and are scored on the same 800 clean TFNS valid rows (defaults: 600 train
rows, 1 epoch, so the whole run takes a few CPU minutes):

- ``clean``: every source honest (the baseline);
- ``undefended``: desk-c poisoned, every source trained on (``source_trust_min=0``);
- ``defended``: desk-c poisoned, job data assembled through the trust filter the trainer uses;
- ``single``: desk-c is the only source (no peers to compare against).

``defended_loss_points`` (clean minus defended accuracy, in points) must be at most 1.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from models.loader import LoadedBase, load_base
from models.metrics import accuracy
from models.seed import split_seed_data
from models.training import TaskData, export_task_adapter, lora_tensors, train
from schemas.messages import LabelledExample
from streamtune.bench.train_bench import _load
from streamtune.core.settings import Settings
from streamtune.train.config import lora_spec, train_config
from streamtune.train.dataset import drop_untrusted_sources

TASK = "tfns-sentiment"
SOURCES = ("desk-a", "desk-b", "desk-c")
POISONED = "desk-c"
FLIP_RATE = 0.3
HOLDOUT_ROWS = 800  # a fixed random sample of TFNS valid: 5 evaluations stay cheap on a CPU


def _examples(
    texts: list[str], labels: list[int], predicted: list[int], sources: list[str], flip: set[str]
) -> list[LabelledExample]:
    rng = random.Random(7)  # noqa: S311 (reproducible noise, not secrets)
    out = []
    for i, (text, label, guess, source) in enumerate(
        zip(texts, labels, predicted, sources, strict=True)
    ):
        if source in flip and rng.random() < FLIP_RATE:
            label = rng.choice([other for other in range(3) if other != label])
        out.append(
            LabelledExample(
                interaction_id=f"p{i}",
                task=TASK,
                text=text,
                label=label,
                ts_ms=1_700_000_000_000 + i,
                source=source,
                predicted_label=guess,
            )
        )
    return out


def _score(
    base: LoadedBase, settings: Settings, examples: list[LabelledExample],
    valid: tuple[list[str], list[int]], epochs: int,
) -> float:  # fmt: skip
    _, head, _ = lora_tensors(base.seed(TASK))
    spec = lora_spec(settings.train, base.encoder)
    config = train_config(settings.train, epochs=epochs)
    data = TaskData(TASK, 3, [e.text for e in examples], [e.label for e in examples], head)
    result = train(
        base.encoder, base.tokenizer, [data], spec=spec, config=config, device=base.device
    )
    blob = export_task_adapter(
        result.model, TASK, num_labels=3, base_model_id=base.model_id, spec=spec
    )
    answers = base.predictor(blob, task=TASK, version="bench").predict(valid[0])
    return accuracy(valid[1], [a.label for a in answers])


def run(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    began = time.perf_counter()
    base = load_base(settings)
    rows = getattr(args, "rows", None) or 600
    epochs = getattr(args, "epochs", None) or 1
    (texts, labels), _ = split_seed_data(TASK, settings.data_dir)  # TFNS train less anchors
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)  # noqa: S311
    texts, labels = [texts[i] for i in order[:rows]], [labels[i] for i in order[:rows]]
    valid_x, valid_y = _load(settings.data_dir / "tfns" / "valid.csv")
    picked = random.Random(1).sample(range(len(valid_x)), min(HOLDOUT_ROWS, len(valid_x)))  # noqa: S311
    valid = ([valid_x[i] for i in picked], [valid_y[i] for i in picked])
    seed_model = base.predictor(base.seed(TASK), task=TASK, version="base")
    predicted = [p.label for p in seed_model.predict(texts)]
    dealt = [SOURCES[i % len(SOURCES)] for i in range(rows)]

    clean = _examples(texts, labels, predicted, dealt, flip=set())
    poisoned = _examples(texts, labels, predicted, dealt, flip={POISONED})
    alone = _examples(texts, labels, predicted, [POISONED] * rows, flip={POISONED})
    defended, _, verdicts = drop_untrusted_sources(settings.gate, poisoned, [])
    kept_alone, _, alone_verdicts = drop_untrusted_sources(settings.gate, alone, [])

    acc = {}
    for name, examples in (
        ("clean", clean), ("undefended", poisoned), ("defended", defended), ("single", kept_alone),
    ):  # fmt: skip
        acc[name] = _score(base, settings, examples, valid, epochs)
        print(f"bench poison: {name} accuracy {acc[name]:.4f}", file=sys.stderr, flush=True)
    base_acc = accuracy(valid[1], [p.label for p in seed_model.predict(valid[0])])
    loss = round(100 * (acc["clean"] - acc["defended"]), 2)
    return {
        "bench": "poison",
        "train_rows": rows,
        "epochs": epochs,
        "flip_rate": FLIP_RATE,
        "poisoned_source": POISONED,
        "holdout": f"tfns valid, {len(valid[0])} clean rows",
        "base_accuracy": round(base_acc, 4),
        "clean_accuracy": round(acc["clean"], 4),
        "undefended_accuracy": round(acc["undefended"], 4),
        "defended_accuracy": round(acc["defended"], 4),
        "single_source_accuracy": round(acc["single"], 4),
        "defended_loss_points": loss,
        "undefended_loss_points": round(100 * (acc["clean"] - acc["undefended"]), 2),
        "single_source_loss_points": round(100 * (acc["clean"] - acc["single"]), 2),
        "within_1_point": loss <= 1.0,
        "trust": {v.source: round(v.trust, 3) for v in verdicts},
        "dropped": sorted(v.source for v in verdicts if not v.kept),
        "single_source_dropped": sorted(v.source for v in alone_verdicts if not v.kept),
        "seconds": round(time.perf_counter() - began, 1),
    }
