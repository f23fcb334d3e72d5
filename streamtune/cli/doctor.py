"""``streamtune doctor``: check what this setup needs, one line each, with the fix for each
problem; exit 0 when nothing failed, 2 otherwise (the checks: :mod:`streamtune.doctor`)."""

from __future__ import annotations

import argparse
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_doctor(args: argparse.Namespace) -> int:
    from streamtune.doctor import DEFAULT_TASK, Doctor

    settings = settings_from_args(args)
    tasks = args.tasks or (
        settings.served_tasks() if settings.serve_tasks.strip() else [DEFAULT_TASK]
    )
    counts = {"ok": 0, "warn": 0, "FAIL": 0, "skip": 0}
    for finding in Doctor(settings, tasks, timeout_s=args.timeout).run():
        counts[finding.status] += 1
        print(finding.line(), flush=True)
    if counts["FAIL"]:
        print(
            f"doctor: {counts['FAIL']} to fix, {counts['warn']} warnings, {counts['skip']} not "
            "checked; run the fixes above in order, then `streamtune doctor` again"
        )
        return 2
    warned = f" ({counts['warn']} warnings)" if counts["warn"] else ""
    print(f"doctor: all {counts['ok'] + counts['warn']} checks pass{warned}")
    return 0


def register(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check this setup (tools, broker, topics, ACLs, keys, cache, device, bootstrap) "
        "and print the fix for each problem",
        description=(
            "One line per check: ok, warn, FAIL (with the command that fixes it) or skip (an "
            "earlier check failed). Python 3.11+, Java 17+ and Maven (for the local broker); "
            "the broker, its topics and this login's ACLs; the trainer's signing key and the "
            "trusted keyring; the cache and its size; the device and the measured precision; "
            "the task's bootstrap adapter, cached and live on model-updates. It never trains "
            "anything. Exit 0 when nothing failed (warnings allowed), 2 otherwise."
        ),
    )
    doctor.add_argument(
        "--task",
        dest="tasks",
        action="append",
        help="a task whose bootstrap adapter to check (repeatable; default: "
        "$STREAMTUNE_SERVE_TASKS when set, else tfns-sentiment, the demo's)",
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds each network step may take (default 5)",
    )
    add_connection_options(doctor)
    doctor.set_defaults(func=cmd_doctor)
