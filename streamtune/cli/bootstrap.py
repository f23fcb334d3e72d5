"""``streamtune bootstrap TASK``: a task's first adapter, trained once, gated, signed, published."""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from streamtune.train.bootstrap import EVAL_FILES, run

    settings = settings_from_args(args)
    report = run(
        settings, args.task, publish_it=not args.no_publish, rebuild=args.rebuild, ship=args.ship
    )
    b = report.bootstrap
    m = b.metrics
    origin = "read from the cache" if b.cached else "trained"
    if b.shipped:
        origin = "the shipped adapter" + (" (cached)" if b.cached else ", sha256 verified")
    print(
        f"{args.task}: {b.version} {origin} ({int(m['train_examples'])} examples, "
        f"{m['train_examples_per_s']:.0f} examples/s); anchor accuracy "
        f"{m['gate_live_accuracy']:.4f} (seed model) -> {m['gate_new_accuracy']:.4f} "
        f"(p={m['gate_p_value']:.2g})"
    )
    if report.eval_accuracy is not None:
        print(
            f"{args.task}: accuracy on {EVAL_FILES[args.task][0]} {report.eval_accuracy:.4f} "
            f"(seed model {report.seed_eval_accuracy:.4f})"
        )
    if report.shipped_to is not None:
        print(
            f"{args.task}: shipped as {report.shipped_to}; set SHIPPED_SHA256[{args.task!r}] in "
            f"models/bootstrap.py to {hashlib.sha256(b.blob).hexdigest()!r} and commit both files"
        )
    if args.rebuild:
        print("rebuilt to check the recipe: neither cached nor published (the cached or shipped "
              "adapter keeps this version's name)")  # fmt: skip
    elif args.no_publish:
        print("not published (--no-publish)")
    else:
        state = "signed and published on" if report.published else "already live on"
        print(f"{args.task}: {b.version} {state} {settings.topic('model-updates')}")
    return 0


def register(sub: Any) -> None:
    bootstrap = sub.add_parser(
        "bootstrap",
        help="train a task's first adapter from its seed data (once), gate, sign and publish it",
    )
    bootstrap.add_argument("task", help="e.g. tfns-sentiment or banking77-intent")
    bootstrap.add_argument("--no-publish", action="store_true", help="build and evaluate only")
    bootstrap.add_argument(
        "--rebuild",
        action="store_true",
        help="train it on this machine even when the cache or the shipped adapter has it, and "
        "report its accuracy: a check of the recipe, neither cached nor published (about 10 "
        "minutes on 2 CPU cores with native bf16)",
    )
    bootstrap.add_argument(
        "--ship",
        action="store_true",
        help="with --rebuild: also write it as the adapter streamtune ships (models/shipped/), "
        "for a maintainer who changed the recipe, the seed data or the base model",
    )
    add_connection_options(bootstrap)
    bootstrap.set_defaults(func=cmd_bootstrap)
