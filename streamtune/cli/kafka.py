"""``streamtune kafka`` (the local broker) and ``streamtune topics``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_kafka(args: argparse.Namespace) -> int:
    from streamtune.core.local_kafka import LocalCluster

    cluster = LocalCluster(settings_from_args(args))
    if args.action == "start":
        for node, result in zip(cluster.nodes, cluster.start(), strict=True):
            how = "was already running" if result.already_running else "started"
            print(
                f"Kafka {cluster.settings.kafka_version} {how} at {result.bootstrap} "
                f"(pid {result.pid}, {result.seconds:.1f}s; logs in {node.log_dir})"
            )
    elif args.action == "stop":
        stopped = cluster.stop()
        print(
            f"Kafka stopped ({stopped} nodes)"
            if stopped > 1
            else ("Kafka stopped" if stopped else "Kafka was not running")
        )
    elif args.action == "resolve":
        print(f"Kafka jars in {cluster.nodes[0].resolve()}")
    else:
        statuses = cluster.status()
        for status in statuses:
            print(status.describe())
        return 0 if all(status.answering for status in statuses) else 3
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streamtune.core.topic_admin import create_topics

    settings = settings_from_args(args)
    if args.action == "create":
        for result in asyncio.run(create_topics(settings)):
            state = "created" if result.created else "exists "
            print(f"{state} {result.name} ({result.partitions} partitions)")
    else:
        for spec in settings.topic_specs():
            configs = ", ".join(f"{k}={v}" for k, v in spec.configs.items())
            print(f"{spec.name:<24} {spec.partitions:>3}  {configs}")
    return 0


def register(sub: Any) -> None:
    kafka = sub.add_parser(
        "kafka", help="run the local Apache Kafka (KRaft): one node, or a cluster with --nodes"
    )
    kafka.add_argument("action", choices=["start", "stop", "status", "resolve"])
    kafka.add_argument(
        "--nodes",
        dest="kafka_nodes",
        type=int,
        help="nodes of a local cluster (default 1); node i uses --port+i and --controller-port+i",
    )
    kafka.add_argument(
        "--data-dir",
        dest="kafka_data_dir",
        type=Path,
        help="default: ~/.cache/streamtune/kafka-data (a cluster: kafka-cluster/node-i)",
    )
    kafka.add_argument(
        "--port", dest="kafka_port", type=int, help="broker port (default 9092; a cluster: 29092)"
    )
    kafka.add_argument(
        "--controller-port",
        dest="kafka_controller_port",
        type=int,
        help="default 9093 (a cluster: 29192)",
    )
    kafka.set_defaults(func=cmd_kafka)

    topics = sub.add_parser("topics", help="create or list streamtune's topics")
    topics.add_argument("action", choices=["create", "list"])
    add_connection_options(topics)
    topics.set_defaults(func=cmd_topics)
