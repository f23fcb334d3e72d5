"""``streamtune worker``: run the Faust agents, or show what their tables hold.

``streamtune worker`` is the same as ``faust -A streams.app worker``, with the settings
from ``STREAMTUNE_*`` (and the options below) instead of Faust's command line.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamtune.cli.options import add_connection_options, require_broker, settings_from_args


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.action == "status":
        from streams.status import describe, worker_status

        print(describe(asyncio.run(worker_status(settings))))
        return 0
    require_broker(settings)  # Faust would log a traceback, or retry for ever
    from streams.app import create_app, run_worker

    run_worker(create_app(settings), loglevel=args.loglevel)  # returns only by SystemExit
    return 0


def _log_role(args: argparse.Namespace) -> str:
    return "worker" if args.action == "run" else "command"


def register(sub: Any) -> None:
    """Add the ``worker`` command to ``streamtune``'s parser."""
    worker = sub.add_parser(
        "worker",
        help="run the Faust agents: join, drift statistics, windows, train triggers",
        description="Run the worker (the default), or print its tables' counters (status).",
    )
    worker.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    worker.add_argument("--loglevel", default="info", help="Faust log level (default info)")
    add_connection_options(worker)
    worker.add_argument("--app-id", dest="worker_app_id", help="default: $STREAMTUNE_WORKER_APP_ID")
    # Logging (streamtune.core.logging_setup): the running worker's, else a command's.
    worker.set_defaults(func=cmd_worker, log_role=_log_role)
