"""``streamtune bench NAME``: run one benchmark; ``--json`` prints its figures as one line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args
from streamtune.core.settings import Settings

#: Benchmark name -> "module:function"; each function takes (Settings, Namespace) and returns
#: the figures as a flat dict (or a list of them, one per scenario), printed as one JSON line
#: each with --json, with ``precision`` and ``precision_probe_ms`` added where the figures lack
#: them. ``make bench`` (``python -m streamtune.bench.results run``) runs every one listed
#: here, in this order.
BENCHES: dict[str, str] = {
    "replay": "streamtune.bench.replay_bench:run",
    "client": "streamtune.bench.client_bench:run",
    "stream": "streamtune.bench.stream_bench:run",
    "drift": "streamtune.bench.drift_bench:run",
    "inference": "streamtune.bench.inference_bench:run",
    "swap": "streamtune.bench.swap_bench:run",
    "train": "streamtune.bench.train_bench:run",
    "adapt": "streamtune.bench.adapt_bench:run",
    "alerts": "streamtune.bench.alerts_bench:run",
    "poison": "streamtune.bench.poison_bench:run",
}


Figures = dict[str, object]


def precision_figures(settings: Settings) -> Figures:
    """``precision`` (serve's, as configured: what ``auto`` resolved to) and the probe's
    matrix-multiply times behind ``auto``, added to every benchmark's lines."""
    from models.device import precision_probe, resolve_device, resolve_precision

    device = resolve_device(settings)
    probe = precision_probe(device, settings.cache_dir)
    return {
        "precision": resolve_precision(settings, device),
        "precision_probe_ms": {"fp32": probe.fp32_ms, "bf16": probe.bf16_ms},
    }


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    import orjson

    module, _, function = BENCHES[args.name].partition(":")
    run: Callable[[Settings, argparse.Namespace], Figures | list[Figures]] = getattr(
        importlib.import_module(module), function
    )
    settings = settings_from_args(args)
    # Probed before the run, so that no timed stretch of it pays for the measurement.
    precision = precision_figures(settings)
    result = run(settings, args)
    for figures in result if isinstance(result, list) else [result]:
        figures = {**figures, **{k: v for k, v in precision.items() if k not in figures}}
        if args.json:
            print(orjson.dumps(figures).decode(), flush=True)
        else:
            for key, value in figures.items():
                print(f"{key:>34}: {value}")
            print()
    return 0


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run a benchmark; --json prints one JSON line")
    bench.add_argument("name", choices=sorted(BENCHES))
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--rows",
        type=int,
        help="rows to use (replay, stream: 10000; client: 100000; inference: all 2388; train: all; "
        "drift: events per stationary stream, 20000; adapt: pre-shift events, 400)",
    )
    bench.add_argument("--swaps", type=int, help="swap: adapters to publish (default 20)")
    bench.add_argument("--seeds", type=int, help="drift: streams per kind to report on (5)")
    bench.add_argument(
        "--epochs", type=int, help="train: epochs (default $STREAMTUNE_TRAIN_EPOCHS)"
    )
    bench.add_argument(
        "--scenario",
        choices=["abrupt", "gradual", "recurring"],
        help="adapt: one scenario (default: all three)",
    )
    bench.add_argument("--rate", type=float, help="adapt: events per second (default 10)")
    bench.add_argument(
        "--oracle-every",
        dest="oracle_every",
        type=int,
        help="adapt: labels between two retrains of the oracle (default 100)",
    )
    bench.add_argument(
        "--feedback",
        choices=["full", "partial"],
        help="adapt: one feedback plan (default: both; full = every event labelled 1 s later, "
        "partial = 30%% labelled 30 s later, 5%% of the labels wrong)",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        help="train: rounds of ours and the previous defaults, the order flipped each round "
        "(default 1: the baseline, then ours)",
    )
    add_connection_options(bench)
    bench.set_defaults(func=cmd_bench)
