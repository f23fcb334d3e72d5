"""``streamtune worker``: run the Faust agents, or show what their tables hold.

``streamtune worker`` is the same as ``faust -A streams.app worker``, with the settings
from ``STREAMTUNE_*`` (and the options below) instead of Faust's command line.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamtune.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in ("bootstrap_servers", "topic_prefix", "worker_app_id")
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.action == "status":
        from streams.status import describe, worker_status

        print(describe(asyncio.run(worker_status(settings))))
        return 0
    from streams.app import create_app, run_worker

    run_worker(create_app(settings), loglevel=args.loglevel)  # returns only by SystemExit
    return 0


def register(subparsers: Any) -> None:
    """Add the ``worker`` command to ``streamtune``'s parser."""
    worker = subparsers.add_parser(
        "worker",
        help="run the Faust agents: join, drift statistics, windows, train triggers",
        description="Run the worker (the default), or print its tables' counters (status).",
    )
    worker.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    worker.add_argument("--loglevel", default="info", help="Faust log level (default info)")
    worker.add_argument(
        "--bootstrap-servers",
        dest="bootstrap_servers",
        help="default: $STREAMTUNE_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    worker.add_argument(
        "--topic-prefix", dest="topic_prefix", help="default: $STREAMTUNE_TOPIC_PREFIX or none"
    )
    worker.add_argument("--app-id", dest="worker_app_id", help="default: $STREAMTUNE_WORKER_APP_ID")
    worker.set_defaults(func=cmd_worker)
