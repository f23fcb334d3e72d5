"""``streamtune monitor``, ``streamtune status`` and ``streamtune report``: what the topics say."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_monitor(args: argparse.Namespace) -> int:
    from streamtune.monitor.dashboard import Monitor

    settings = settings_from_args(args)

    async def main() -> None:
        monitor = Monitor(settings, port=args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def announce() -> None:
            await monitor.ready.wait()
            topics = f"topics {settings.topic_prefix or '(no prefix)'}*"
            if monitor.url is None:  # port 0, or taken (logged)
                print(f"monitor: no dashboard (port {monitor.port}); {topics}", flush=True)
                return
            guarded = ", token required" if settings.dashboard_token() else ""
            print(
                f"monitor: dashboard on {monitor.url} (/metrics, /healthz{guarded}); {topics}",
                flush=True,
            )

        announcing = asyncio.create_task(announce())
        await monitor.run(stop)
        announcing.cancel()

    asyncio.run(main())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from streamtune.monitor.feed import history_start, read_state
    from streamtune.monitor.status import describe

    settings = settings_from_args(args)
    state = asyncio.run(read_state(settings, with_lag=True, since_ms=history_start(settings)))
    print(describe(state.snapshot(), alerts=args.alerts))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    settings = settings_from_args(argparse.Namespace(**{**vars(args), "topic_prefix": args.run}))
    from streamtune.monitor.report import write_run_report

    out = write_run_report(settings, args.out)
    print(f"report: {out / 'summary.md'}")
    return 0


def register(sub: Any) -> None:
    """Add ``monitor``, ``status`` and ``report`` to ``streamtune``'s parser."""
    monitor = sub.add_parser(
        "monitor",
        help="a live web dashboard of the pipeline, with /metrics and /healthz",
        description="Read every topic of the prefix and serve the dashboard at / on --port.",
    )
    monitor.add_argument("--port", type=int, help="default: $STREAMTUNE_MONITOR_PORT or 8090")
    add_connection_options(monitor)
    monitor.set_defaults(func=cmd_monitor, log_role="monitor")

    status = sub.add_parser(
        "status",
        help="a terminal snapshot: live adapters, lag, last drift, jobs in flight, alerts",
    )
    status.add_argument("--alerts", type=int, default=5, help="recent alerts shown (default 5)")
    add_connection_options(status)
    status.set_defaults(func=cmd_status)

    report = sub.add_parser(
        "report",
        help="write a run's report (Markdown, PNG plots, JSON) from its topics",
        description="RUN is the run's topic prefix, e.g. a demo's 'demo-20260101-120000-ab12-'.",
    )
    report.add_argument("run", help="the run's topic prefix")
    report.add_argument(
        "--out", type=Path, help="folder to write (default <cache_dir>/reports/RUN)"
    )
    report.add_argument(
        "--bootstrap-servers",
        dest="bootstrap_servers",
        help="default: $STREAMTUNE_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    report.set_defaults(func=cmd_report)
