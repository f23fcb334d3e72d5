"""The ``streamtune`` command line: it only wires the rooms together.

Run ``streamtune --help`` for the commands; each has its own ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from streamtune import cli_worker
from streamtune.errors import StreamtuneError
from streamtune.settings import Settings

log = logging.getLogger("streamtune")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in (
        "bootstrap_servers",
        "topic_prefix",
        "kafka_data_dir",
        "kafka_port",
        "kafka_controller_port",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


# --- kafka ----------------------------------------------------------------------------
def cmd_kafka(args: argparse.Namespace) -> int:
    from streamtune.kafka.local import LocalKafka

    broker = LocalKafka(_settings(args))
    if args.action == "start":
        result = broker.start()
        how = "was already running" if result.already_running else "started"
        print(
            f"Kafka {broker.settings.kafka_version} {how} at {result.bootstrap} "
            f"(pid {result.pid}, {result.seconds:.1f}s; logs in {broker.log_dir})"
        )
    elif args.action == "stop":
        print("Kafka stopped" if broker.stop() else "Kafka was not running")
    elif args.action == "resolve":
        print(f"Kafka jars in {broker.resolve()}")
    else:
        status = broker.status()
        print(status.describe())
        return 0 if status.answering else 3
    return 0


# --- topics ---------------------------------------------------------------------------
def cmd_topics(args: argparse.Namespace) -> int:
    from streamtune.kafka.topics import create_topics

    settings = _settings(args)
    if args.action == "create":
        for result in asyncio.run(create_topics(settings)):
            state = "created" if result.created else "exists "
            print(f"{state} {result.name} ({result.partitions} partitions)")
    else:
        for spec in settings.topic_specs():
            configs = ", ".join(f"{k}={v}" for k, v in spec.configs.items())
            print(f"{spec.name:<24} {spec.partitions:>3}  {configs}")
    return 0


# --- schemas --------------------------------------------------------------------------
def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.export import export_json_schemas

    paths = export_json_schemas(Path(args.directory))
    print(f"wrote {len(paths)} files to {args.directory}")
    return 0


# --- replay ---------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from streamtune.replay import BadRow, default_id_prefix, parse_label_map, read_rows, replay

    settings = _settings(args)
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


# --- demo -----------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    import secrets
    import time

    from models.signing import generate_keypair
    from streamtune.adapt import run_scenario, scenario_settings
    from streamtune.kafka.local import LocalKafka
    from streamtune.kafka.topics import create_topics
    from streamtune.scenario import build

    base = _settings(args)
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
    return 0


# --- bench ----------------------------------------------------------------------------
#: Benchmark name -> "module:function"; each function takes (Settings, Namespace) and returns
#: the figures as a flat dict, printed as one JSON line with --json.
BENCHES: dict[str, str] = {
    "replay": "streamtune.bench.replay_bench:run",
    "inference": "streamtune.bench.inference_bench:run",
    "swap": "streamtune.bench.swap_bench:run",
    "train": "streamtune.bench.train_bench:run",
    "adapt": "streamtune.bench.adapt_bench:run",
    "stream": "streamtune.bench.stream_bench:run",
    "drift": "streamtune.bench.drift_bench:run",
}


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    import orjson

    module, _, function = BENCHES[args.name].partition(":")
    run: Callable[[Settings, argparse.Namespace], dict[str, object]] = getattr(
        importlib.import_module(module), function
    )
    figures = run(_settings(args), args)
    if args.json:
        print(orjson.dumps(figures).decode())
    else:
        for key, value in figures.items():
            print(f"{key:>28}: {value}")
    return 0


# --- parser ---------------------------------------------------------------------------
def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        dest="bootstrap_servers",
        help="default: $STREAMTUNE_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    parser.add_argument(
        "--topic-prefix", dest="topic_prefix", help="default: $STREAMTUNE_TOPIC_PREFIX or none"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamtune",
        description="Keep a deployed text model adapted to a live Kafka stream.",
        epilog="Every option also reads from STREAMTUNE_* environment variables; see the README.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser("kafka", help="run the local single-node Apache Kafka (KRaft)")
    kafka.add_argument("action", choices=["start", "stop", "status", "resolve"])
    kafka.add_argument(
        "--data-dir",
        dest="kafka_data_dir",
        type=Path,
        help="default: ~/.cache/streamtune/kafka-data",
    )
    kafka.add_argument("--port", dest="kafka_port", type=int, help="broker port (default 9092)")
    kafka.add_argument(
        "--controller-port", dest="kafka_controller_port", type=int, help="default 9093"
    )
    kafka.set_defaults(func=cmd_kafka)

    topics = sub.add_parser("topics", help="create or list streamtune's topics")
    topics.add_argument("action", choices=["create", "list"])
    _connection_options(topics)
    topics.set_defaults(func=cmd_topics)

    schemas = sub.add_parser("schemas", help="export JSON Schema of every message")
    schemas.add_argument("action", choices=["export"])
    schemas.add_argument("directory")
    schemas.set_defaults(func=cmd_schemas)

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
    _connection_options(rp)
    rp.set_defaults(func=cmd_replay)

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
    _connection_options(demo)
    demo.set_defaults(func=cmd_demo)

    from streamtune import cli_serve

    cli_serve.register(sub, _connection_options)
    cli_serve.register_train(sub, _connection_options)
    cli_worker.register(sub)

    bench = sub.add_parser("bench", help="run a benchmark; --json prints one JSON line")
    bench.add_argument("name", choices=sorted(BENCHES))
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--rows", type=int, help="rows to use (replay: 10000; inference: all 2388; train: all)"
    )
    bench.add_argument(
        "--epochs", type=int, help="train: epochs (default $STREAMTUNE_TRAIN_EPOCHS)"
    )
    _connection_options(bench)
    bench.set_defaults(func=cmd_bench)
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
    except StreamtuneError as exc:
        print(f"streamtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streamtune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
