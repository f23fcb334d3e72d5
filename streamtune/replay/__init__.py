"""Replay a file into Kafka: ``rows`` parses it, ``publisher`` publishes it at a paced rate."""

from streamtune.replay.publisher import ReplayStats, default_id_prefix, replay
from streamtune.replay.rows import BadRow, ReplayRow, parse_label_map, read_rows

__all__ = [
    "BadRow",
    "ReplayRow",
    "ReplayStats",
    "default_id_prefix",
    "parse_label_map",
    "read_rows",
    "replay",
]
