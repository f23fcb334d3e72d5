"""The ``streamtune`` command line: it only wires the rooms together.

One module per command group, each with a ``register(sub)`` that adds its commands; this
module builds the parser from them and turns the errors a person can fix into one line and
exit 2 (the mapping is :mod:`streamtune.cli.errors`).
Run ``streamtune --help`` for the commands; each has its own ``--help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streamtune.cli import (
    acls,
    bench,
    bootstrap,
    demo,
    doctor,
    kafka,
    monitor,
    replay,
    schemas,
    serve,
    train,
    worker,
)
from streamtune.cli.errors import explain
from streamtune.core.logging_setup import configure_logging

#: Command groups in the order ``--help`` lists them.
GROUPS = (
    doctor, kafka, schemas, replay, demo, bootstrap, serve, train, worker, monitor, acls, bench,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamtune",
        description="Keep a deployed text model adapted to a live Kafka stream.",
        epilog="Every option also reads from STREAMTUNE_* environment variables; see docs/configuration.md.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # One logging configuration for the process: a one-shot command reports a broker it
    # cannot reach in one line of its own; services (serve, train, worker) log more. Each
    # command's parser names its role (``log_role``: a role, or a function of the arguments).
    role = getattr(args, "log_role", "command")
    configure_logging(
        logging.DEBUG if args.verbose else logging.WARNING,
        role=role(args) if callable(role) else role,
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("streamtune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A mistake a person can fix (a setting, the broker, a topic, a login, an ACL) is
        # one line that names the fix; anything else is a bug and keeps its traceback.
        line = explain(exc)
        if line is None:
            raise
        print(f"streamtune: error: {line}", file=sys.stderr)
        return 2
