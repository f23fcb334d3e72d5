"""The ``streamtune`` command line: it only wires the rooms together.

One module per command group, each with a ``register(sub)`` that adds its commands; this
module builds the parser from them and turns streamtune's errors into one line and exit 2.
Run ``streamtune --help`` for the commands; each has its own ``--help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from schemas.base import describe
from streamtune.cli import bench, bootstrap, demo, kafka, replay, schemas, serve, train, worker
from streamtune.core.errors import StreamtuneError

#: Command groups in the order ``--help`` lists them.
GROUPS = (kafka, schemas, replay, demo, bootstrap, serve, train, worker, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamtune",
        description="Keep a deployed text model adapted to a live Kafka stream.",
        epilog="Every option also reads from STREAMTUNE_* environment variables; see the README.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ValidationError as exc:
        # An invalid STREAMTUNE_* setting: one line naming the variable, not pydantic's trace.
        print(f"streamtune: error: invalid setting: {describe(exc)}", file=sys.stderr)
        return 2
    except StreamtuneError as exc:
        print(f"streamtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamtune: interrupted", file=sys.stderr)
        return 130
