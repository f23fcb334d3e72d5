"""``streamtune replay FILE``: publish interactions (and delayed feedback) from a file."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_replay(args: argparse.Namespace) -> int:
    from streamtune.replay import BadRow, default_id_prefix, parse_label_map, read_rows, replay

    settings = settings_from_args(args)
    path = Path(args.file)
    shown = 0

    def report(bad: BadRow) -> None:
        nonlocal shown
        shown += 1
        if shown <= args.show_bad:
            print(f"{path}:{bad.line}: skipped: {bad.reason}", file=sys.stderr)
        elif shown == args.show_bad + 1:
            print(
                "(further bad rows are counted, not shown; raise --show-bad to see them)",
                file=sys.stderr,
            )

    rows = read_rows(
        path,
        args.task,
        text_column=args.text_column,
        label_column=args.label_column,
        entity_column=args.entity_column,
        label_map=parse_label_map(args.label_map),
        limit=args.limit,
    )
    total = args.limit or _count_rows(path)
    stats = asyncio.run(
        replay(
            settings,
            rows,
            task=args.task,
            rate=args.rate,
            feedback_fraction=args.feedback_fraction,
            feedback_delay_s=args.feedback_delay,
            id_prefix=args.id_prefix or default_id_prefix(path),
            seed=args.seed,
            total=total,
            on_bad_row=report,
        )
    )
    print(stats.summary())
    return 0 if stats.interactions > 0 or stats.bad_rows == 0 else 1


def _count_rows(path: Path) -> int | None:
    if path.suffix in (".jsonl", ".ndjson"):
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    return None


def register(sub: Any) -> None:
    rp = sub.add_parser(
        "replay", help="publish interactions (and feedback) from a CSV or JSONL file"
    )
    rp.add_argument("file")
    rp.add_argument("--task", default="tfns-sentiment", help="task name (default tfns-sentiment)")
    rp.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="interactions per second; 0 = unlimited (default 200)",
    )
    rp.add_argument(
        "--feedback-fraction",
        type=float,
        default=0.0,
        help="share of rows whose label is published as feedback",
    )
    rp.add_argument(
        "--feedback-delay",
        type=float,
        default=0.0,
        help="seconds between an interaction and its feedback",
    )
    rp.add_argument("--limit", type=int, help="publish at most this many rows")
    rp.add_argument(
        "--id-prefix", help="interaction ids are PREFIX-LINE (default: file stem + random)"
    )
    rp.add_argument("--text-column")
    rp.add_argument("--label-column")
    rp.add_argument("--entity-column")
    rp.add_argument("--label-map", help="map label names, e.g. Positive=Bullish,Negative=Bearish")
    rp.add_argument("--seed", type=int, help="seed for choosing which rows get feedback")
    rp.add_argument(
        "--show-bad", type=int, default=20, help="print at most this many bad rows (default 20)"
    )
    add_connection_options(rp)
    rp.set_defaults(func=cmd_replay)
