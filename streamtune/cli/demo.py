"""``streamtune demo``: the whole loop on a local Kafka, narrated."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_demo(args: argparse.Namespace) -> int:
    import secrets
    import time

    from models.signing import generate_keypair
    from streamtune.core.local_kafka import LocalKafka
    from streamtune.core.topic_admin import create_topics
    from streamtune.scenario.build import build
    from streamtune.scenario.runner import run_scenario, scenario_settings

    base = settings_from_args(args)
    if args.local_kafka:
        result = LocalKafka(base).start()
        print(
            f"[1/4] Kafka at {result.bootstrap} ({'already running' if result.already_running else 'started'})"
        )
    key = base.signing_key_file or base.keys_dir / "trainer.key"
    trusted = base.trusted_keys_dir or base.keys_dir / "trusted"
    if not key.exists():
        private, public = generate_keypair(key.with_suffix(""))
        trusted.mkdir(parents=True, exist_ok=True)
        (trusted / public.name).write_bytes(public.read_bytes())
        print(f"      made a signing key {private} and trusted it")
    # A fresh namespace per run, so each demo starts from the base model and empty windows.
    prefix = args.topic_prefix or f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}-"
    settings = scenario_settings(base, topic_prefix=prefix)
    created = asyncio.run(create_topics(settings))
    print(f"[2/4] {len(created)} topics ready under the prefix {prefix!r}")
    scenario = build(settings.data_dir, pre=args.pre)
    logs = settings.cache_dir / "demo-logs" / prefix.rstrip("-")
    print(
        f"[3/4] starting worker, serve and train (logs in {logs}), then replaying {scenario.shift_at} "
        f"finance tweets and {len(scenario.rows) - scenario.shift_at} crypto/stock posts at {args.rate:.0f}/s, "
        "each with its true label as feedback one second later; the domain shifts at event "
        f"{scenario.shift_at}"
    )
    began = time.monotonic()

    def tick(run: object) -> None:
        answered = len(run.predictions)  # type: ignore[attr-defined]
        versions = sorted({p.adapter_version for p in run.predictions.values()})  # type: ignore[attr-defined]
        live = (
            max(run.predictions.values(), key=lambda p: p.ts_ms).adapter_version
            if answered
            else "-"
        )  # type: ignore[attr-defined]
        print(
            f"      [{time.monotonic() - began:5.0f}s] answered {answered:>5} | serving {live} "
            f"(seen: {', '.join(versions) or '-'}) | drift events {len(run.drift_events)} | "  # type: ignore[attr-defined]
            f"train jobs {run.jobs} | promoted {run.promoted} | rejected {run.rejected}",  # type: ignore[attr-defined]
            flush=True,
        )

    result = run_scenario(settings, scenario, logs, rate=args.rate, on_tick=tick, settle_s=5.0)
    hits = result.hits(scenario, "adapt")

    def acc(part: list[bool | None]) -> str:
        known = [h for h in part if h is not None]
        return f"{sum(known) / len(known):.1%}" if known else "n/a"

    s = scenario.shift_at
    print(
        f"[4/4] done in {result.seconds:.0f}s: accuracy before the shift {acc(hits[:s])}, after it {acc(hits[s:])} "
        f"(last 200 events {acc(hits[-200:])}); {len(result.drift_events)} drift events, {result.jobs} train jobs, "
        f"{result.promoted} adapters promoted, {result.rejected} rejected."
    )
    print(
        "      `streamtune bench adapt --json` runs the same scenario beside a static model and an online River model."
    )
    _write_report(settings)
    return 0


def _write_report(settings: Any) -> None:
    """The run's report (``streamtune report PREFIX``), from what it left on its topics."""
    from streamtune.monitor.report import write_run_report

    print(f"      report of this run: {write_run_report(settings) / 'summary.md'}")


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="the whole loop on local Kafka: replay, serve, drift, train, hot swap"
    )
    demo.add_argument("--rate", type=float, default=10.0, help="events per second (default 10)")
    demo.add_argument("--pre", type=int, default=400, help="tweets before the shift (default 400)")
    demo.add_argument(
        "--no-local-kafka",
        dest="local_kafka",
        action="store_false",
        help="use STREAMTUNE_BOOTSTRAP_SERVERS as it is",
    )
    add_connection_options(demo)
    demo.set_defaults(func=cmd_demo)
