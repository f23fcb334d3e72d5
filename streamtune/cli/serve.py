"""``streamtune serve`` and the adapter commands: ``keys``, ``adapters`` and ``rollback``."""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path
from typing import Any

from streamtune.cli.options import (
    add_connection_options,
    require_broker,
    run_service,
    settings_from_args,
)


def cmd_serve(args: argparse.Namespace) -> int:
    from schemas.topics import SERVE_TOPICS

    settings = settings_from_args(args)
    require_broker(settings, SERVE_TOPICS)
    from streamtune.serve import Server  # torch and the model: seconds

    server = Server(settings)
    return run_service(
        server,
        lambda: (
            "serving "
            + ", ".join(f"{t}={v}" for t, v in server.stats.versions.items())
            + " (Ctrl-C or SIGTERM finishes the batch in flight and stops)"
        ),
        lambda st: (
            f"serve stopped: answered {st.answered} interactions in {st.batches} batches, "
            f"{st.dead_lettered} dead-lettered, {st.swaps} swaps, {st.rejected} adapters rejected"
        ),
    )


def cmd_keys(args: argparse.Namespace) -> int:
    from models.signing import Signer, generate_keypair

    settings = settings_from_args(args)
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
    from streamtune.model_updates.history import history

    settings = settings_from_args(args)
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
    if live is None or live.revert_to_base:
        print("(live: base)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from streamtune.core.clients import make_producer
    from streamtune.model_updates.history import rollback

    settings = settings_from_args(args)

    async def main() -> str:
        producer = make_producer(settings)
        await producer.start()
        try:
            target = await rollback(producer, settings, args.task, args.to)
        finally:
            await producer.stop()
        return target.version

    print(f"{args.task} rolled back to {asyncio.run(main())}")
    return 0


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run an inference consumer (hot-swaps signed adapters)")
    serve.add_argument(
        "--tasks",
        dest="serve_tasks",
        help="comma-separated tasks (default: $STREAMTUNE_SERVE_TASKS or all)",
    )
    serve.add_argument(
        "--precision", dest="serve_precision", choices=["auto", "fp32", "bf16", "int8"]
    )
    serve.add_argument(
        "--group", dest="serve_group_id", help="consumer group (default: streamtune-serve)"
    )
    add_connection_options(serve)
    serve.set_defaults(func=cmd_serve, log_role="service")

    keys = sub.add_parser("keys", help="generate an Ed25519 key pair for signing adapters")
    keys.add_argument("action", choices=["generate"])
    keys.add_argument("--name", default="trainer", help="file stem (default trainer)")
    keys.add_argument("--dir", help="folder (default <cache_dir>/keys)")
    keys.add_argument("--trust", action="store_true", help="also trust the public key locally")
    keys.set_defaults(func=cmd_keys)

    adapters = sub.add_parser("adapters", help="list the published adapters of a task")
    adapters.add_argument("action", choices=["list"])
    adapters.add_argument("task")
    add_connection_options(adapters)
    adapters.set_defaults(func=cmd_adapters)

    rb = sub.add_parser(
        "rollback",
        help="make an earlier adapter live again: signs it anew (trainer key) with a new sequence",
    )
    rb.add_argument("task")
    rb.add_argument(
        "--to",
        help="version to restore (default: the live one's parent; 'base' = the seed model, "
        "by a signed manifest)",
    )
    add_connection_options(rb)
    rb.set_defaults(func=cmd_rollback)
