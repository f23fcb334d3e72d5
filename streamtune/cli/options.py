"""What every command shares: the connection options, one settings builder, and the runner
of a long-lived service (serve, train)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any, Protocol

from streamtune.core.logging_setup import quiet_aiokafka
from streamtune.core.settings import Settings

#: Command-line destinations that override a setting of the same name when given.
SETTING_OPTIONS = (
    "bootstrap_servers",
    "topic_prefix",
    "kafka_data_dir",
    "kafka_port",
    "kafka_controller_port",
    "kafka_nodes",
    "worker_app_id",
    "serve_tasks",
    "serve_precision",
    "serve_group_id",
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings from ``STREAMTUNE_*``, overridden by the options given on the command line.

    >>> settings_from_args(argparse.Namespace(topic_prefix="t-", serve_tasks=None)).topic_prefix
    't-'
    """
    overrides = {
        name: getattr(args, name)
        for name in SETTING_OPTIONS
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def require_broker(settings: Settings, topics: tuple[str, ...] = ()) -> None:
    """Fail at once when no broker answers, or one of ``topics`` (names before the prefix) is
    missing: before a service imports torch and loads its model, or Faust retries for ever.
    The error is the usual one line (``streamtune.cli.errors``)."""
    from streamtune.core.clients import login_name, make_producer, require_topics

    async def check() -> None:
        producer = make_producer(settings)
        await producer.start()
        try:
            names = [settings.topic(t) for t in topics]
            await require_topics(producer, names, login_name(settings))
        finally:
            await producer.stop()

    with quiet_aiokafka():  # its "Unable connect" line would repeat ours
        asyncio.run(check())


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers`` and ``--topic-prefix``, for every command that talks to Kafka."""
    parser.add_argument(
        "--bootstrap-servers",
        dest="bootstrap_servers",
        help="default: $STREAMTUNE_BOOTSTRAP_SERVERS or 127.0.0.1:9092",
    )
    parser.add_argument(
        "--topic-prefix", dest="topic_prefix", help="default: $STREAMTUNE_TOPIC_PREFIX or none"
    )


class Service(Protocol):
    """A long-lived process body: ``Server`` or ``Trainer``."""

    ready: asyncio.Event

    async def run(self, stop: asyncio.Event) -> Any: ...


def run_service(
    service: Service, ready_line: Callable[[], str], summary: Callable[[Any], str]
) -> int:
    """Run ``service`` until SIGTERM or Ctrl-C: print ``ready_line()`` once it is ready, and
    ``summary(stats)`` when it has stopped. Its command's parser sets ``log_role="service"``:
    it reports what it does (swaps, jobs) at INFO, and aiokafka's warnings about the broker."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def announce() -> None:
            await service.ready.wait()
            print(ready_line(), flush=True)

        announcing = asyncio.create_task(announce())
        stats = await service.run(stop)
        announcing.cancel()
        print(summary(stats), flush=True)

    asyncio.run(main())
    return 0
