"""``streamtune demo``: the whole loop on a local Kafka, narrated."""

from __future__ import annotations

import argparse
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_demo(args: argparse.Namespace) -> int:
    import secrets
    import time

    from models.bootstrap import evaluate_file
    from streamtune.core.local_kafka import LocalKafka
    from streamtune.scenario.build import build
    from streamtune.scenario.narrator import Narrator
    from streamtune.scenario.prepare import ensure_signing_key, prepare
    from streamtune.scenario.runner import TASK, run_scenario, scenario_settings

    base_settings = settings_from_args(args)
    if args.local_kafka:
        result = LocalKafka(base_settings).start()
        how = "already running" if result.already_running else "started"
        print(f"[1/5] Kafka at {result.bootstrap} ({how})")
    # A fresh namespace per run, so each demo starts from the bootstrap model and empty windows.
    prefix = args.topic_prefix or f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}-"
    settings = ensure_signing_key(scenario_settings(base_settings, topic_prefix=prefix))
    print(
        f"[2/5] topics under the prefix {prefix!r}; adapters signed with {settings.signing_key_file}"
    )
    print(
        f"[3/5] the first model: {TASK}'s bootstrap adapter (LoRA on TFNS train: the one "
        "streamtune ships, or trained once per machine when its recipe was changed)"
    )
    base, start = prepare(settings, TASK)
    origin = "from the cache" if start.cached else "trained just now"
    if start.shipped:
        origin = "shipped, " + ("from the cache" if start.cached else "sha256 verified")
    print(
        f"      {start.version} ({origin}) is live; anchor accuracy {start.metrics['gate_new_accuracy']:.1%}"
    )
    scenario = build(settings.data_dir, args.scenario, pre=args.pre)
    logs = settings.cache_dir / "demo-logs" / prefix.rstrip("-")
    print(
        f"[4/5] starting worker, serve and train (logs in {logs}), then replaying the "
        f"{args.scenario} scenario at {args.rate:.0f}/s: {scenario.shift_at} finance tweets, then "
        f"crypto/stock posts ({len(scenario.rows)} events), each labelled one second later"
    )
    narrate = Narrator(scenario, "adapt")
    run = run_scenario(
        settings, scenario, logs, rate=args.rate, on_tick=narrate, settle_s=30.0,
        start_version=start.version,
    )  # fmt: skip
    narrate(run)
    s = scenario.shift_at
    hits = run.hits(scenario.rows, "adapt")
    post = scenario.rows[s:]
    static = evaluate_file(base, start.blob, TASK, [r.text for r in post], [r.label for r in post])

    def share(part: list[bool]) -> str:
        return f"{sum(part) / len(part):.1%}" if part else "n/a"

    delay = run.seconds_drift_to_adapted_answer()
    print(
        f"[5/5] done in {run.seconds:.0f}s: accuracy before the shift {share(hits[:s])}; after it "
        f"{share(hits[s:])} against {static:.1%} for the static model on the same events "
        f"(last 200 events {share(hits[-200:])}); first adapted answer "
        f"{'n/a' if delay is None else f'{delay:.0f}s'} after the first drift event; "
        f"{len(run.drift_events)} drift events, {run.jobs} train jobs, {run.promoted} adapters "
        f"promoted, {run.rejected} jobs rejected, {run.superseded} superseded."
    )
    print(
        "      `streamtune bench adapt --json` runs three such scenarios beside a static model, "
        "online River models and scheduled retraining."
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
        "--scenario",
        choices=["abrupt", "gradual", "recurring"],
        default="abrupt",
        help="the shape of the shift (default abrupt)",
    )
    demo.add_argument(
        "--no-local-kafka",
        dest="local_kafka",
        action="store_false",
        help="use STREAMTUNE_BOOTSTRAP_SERVERS as it is",
    )
    add_connection_options(demo)
    demo.set_defaults(func=cmd_demo)
