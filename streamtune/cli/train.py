"""``streamtune train``: run a trainer worker (train jobs -> gated, signed adapters)."""

from __future__ import annotations

import argparse
from typing import Any

from streamtune.cli.options import (
    add_connection_options,
    require_broker,
    run_service,
    settings_from_args,
)


def cmd_train(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    require_broker(settings)
    from streamtune.train.worker import Trainer  # torch and the model: seconds

    return run_service(
        Trainer(settings),
        lambda: (
            "training: waiting for train jobs (Ctrl-C or SIGTERM stops; a job in progress reruns later)"
        ),
        lambda st: (
            f"trainer stopped: {st.jobs} jobs, {st.promoted} adapters promoted, "
            f"{st.rejected} rejected by the gate, {st.failed} jobs failed"
        ),
    )


def register(sub: Any) -> None:
    train = sub.add_parser(
        "train", help="run a trainer worker: train jobs -> gated, signed adapters"
    )
    add_connection_options(train)
    train.set_defaults(func=cmd_train, log_role="service")
