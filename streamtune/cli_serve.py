"""CLI wiring for serving and adapters: ``serve``, ``keys``, ``adapters`` and ``rollback``."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from streamtune.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    from streamtune.cli import _settings as base

    settings = base(args)
    overrides = {}
    if getattr(args, "tasks", None):
        overrides["serve_tasks"] = args.tasks
    if getattr(args, "precision", None):
        overrides["serve_precision"] = args.precision
    if getattr(args, "group", None):
        overrides["serve_group_id"] = args.group
    return Settings(**{**settings.model_dump(), **overrides}) if overrides else settings


def _log_info() -> None:
    """Long-running processes report what they do (swaps, jobs) at INFO."""
    import logging

    logging.getLogger("streamtune").setLevel(logging.INFO)


def _run_service(
    service: object, ready_line: Callable[[], str], summary: Callable[[object], str]
) -> int:
    """Run a long-lived service (``Server`` or ``Trainer``) until SIGTERM or Ctrl-C: print
    ``ready_line()`` once it is ready, and ``summary(stats)`` when it has stopped."""
    _log_info()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def announce() -> None:
            await service.ready.wait()  # type: ignore[attr-defined]
            print(ready_line(), flush=True)

        announcing = asyncio.create_task(announce())
        stats = await service.run(stop)  # type: ignore[attr-defined]
        announcing.cancel()
        print(summary(stats), flush=True)

    asyncio.run(main())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from streamtune.serve import Server

    server = Server(_settings(args))
    return _run_service(
        server,
        lambda: (
            "serving "
            + ", ".join(f"{t}={v}" for t, v in server.stats.versions.items())
            + " (Ctrl-C or SIGTERM finishes the batch in flight and stops)"
        ),
        lambda st: (
            f"serve stopped: answered {st.answered} interactions in {st.batches} batches, "  # type: ignore[attr-defined]
            f"{st.dead_lettered} dead-lettered, {st.swaps} swaps, {st.rejected} adapters rejected"  # type: ignore[attr-defined]
        ),
    )


def cmd_keys(args: argparse.Namespace) -> int:
    from models.signing import Signer, generate_keypair

    settings = _settings(args)
    directory = Path(args.dir) if args.dir else settings.keys_dir
    key_path, pub_path = generate_keypair(directory / args.name)
    key_id = Signer.from_pem(key_path.read_bytes()).key_id
    print(f"wrote {key_path} (private, mode 600) and {pub_path}; key id {key_id}")
    if args.trust:
        trusted = settings.trusted_keys_dir or settings.keys_dir / "trusted"
        trusted.mkdir(parents=True, exist_ok=True)
        shutil.copy(pub_path, trusted / pub_path.name)
        print(f"trusted it: copied the public key to {trusted}")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from streamtune.adapters import history

    settings = _settings(args)
    published, live = asyncio.run(history(settings, args.task))
    if not published:
        print(f"no adapters published for {args.task}")
        return 0
    for m in published:
        mark = "*" if live is not None and live.version == m.version else " "
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(m.metrics.items()))
        print(
            f"{mark} {m.version:<24} parent={m.parent_version or '-':<20} {m.transfer:<7} {m.size_bytes:>9} B  key={m.key_id}  {metrics}"
        )
    if live is None:
        print("(live: base)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from streamtune.adapters import rollback
    from streamtune.kafka.clients import make_producer

    settings = _settings(args)

    async def main() -> str:
        producer = make_producer(settings)
        await producer.start()
        try:
            target = await rollback(producer, settings, args.task, args.to)
        finally:
            await producer.stop()
        return "base" if target is None else target.version

    print(f"{args.task} rolled back to {asyncio.run(main())}")
    return 0


def register(sub: argparse._SubParsersAction, connection_options: object) -> None:
    """Add the serve and adapter commands to the ``streamtune`` parser."""
    add_conn = connection_options  # the shared --bootstrap-servers/--topic-prefix options

    serve = sub.add_parser("serve", help="run an inference consumer (hot-swaps signed adapters)")
    serve.add_argument(
        "--tasks", help="comma-separated tasks (default: $STREAMTUNE_SERVE_TASKS or all)"
    )
    serve.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"])
    serve.add_argument("--group", help="consumer group (default: streamtune-serve)")
    add_conn(serve)  # type: ignore[operator]
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="generate an Ed25519 key pair for signing adapters")
    keys.add_argument("action", choices=["generate"])
    keys.add_argument("--name", default="trainer", help="file stem (default trainer)")
    keys.add_argument("--dir", help="folder (default <cache_dir>/keys)")
    keys.add_argument("--trust", action="store_true", help="also trust the public key locally")
    keys.set_defaults(func=cmd_keys)

    adapters = sub.add_parser("adapters", help="list the published adapters of a task")
    adapters.add_argument("action", choices=["list"])
    adapters.add_argument("task")
    add_conn(adapters)  # type: ignore[operator]
    adapters.set_defaults(func=cmd_adapters)

    rb = sub.add_parser("rollback", help="make an earlier signed adapter live again")
    rb.add_argument("task")
    rb.add_argument(
        "--to", help="version to restore (default: the live one's parent; 'base' = no adapter)"
    )
    add_conn(rb)  # type: ignore[operator]
    rb.set_defaults(func=cmd_rollback)


def cmd_train(args: argparse.Namespace) -> int:
    from streamtune.trainer import Trainer

    return _run_service(
        Trainer(_settings(args)),
        lambda: (
            "training: waiting for train jobs (Ctrl-C or SIGTERM stops; a job in progress reruns later)"
        ),
        lambda st: (
            f"trainer stopped: {st.jobs} jobs, {st.promoted} adapters promoted, "  # type: ignore[attr-defined]
            f"{st.rejected} rejected by the gate, {st.failed} jobs failed"  # type: ignore[attr-defined]
        ),
    )


def register_train(sub: argparse._SubParsersAction, connection_options: object) -> None:
    train = sub.add_parser(
        "train", help="run a trainer worker: train jobs -> gated, signed adapters"
    )
    connection_options(train)  # type: ignore[operator]
    train.set_defaults(func=cmd_train)
