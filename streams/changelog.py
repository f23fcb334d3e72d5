"""The one way the agents write their tables' state to the changelog topics.

Both tables use a memory store rebuilt from its changelog on start-up, and both agents
write the changelog themselves, once per key per batch, after the batch's outputs were
acknowledged (the order is what makes a crash safe; see :mod:`streams.join_agent`). Keys
and values are JSON, Faust's default codec, so that Faust's own recovery reads them back
into ``table.data``; a ``None`` value is a tombstone.

>>> changelog_record("a", {"state": "done"})
(b'"a"', b'{"state":"done"}')
>>> changelog_record("a", None)
(b'"a"', None)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def changelog_record(key: str, value: Mapping[str, Any] | None) -> tuple[bytes, bytes | None]:
    """The key and value bytes of one changelog record."""
    return orjson.dumps(key), None if value is None else orjson.dumps(value)


class ChangelogWriter:
    """Writes one table's changed values to its changelog and into its store.

    ``table`` is a Faust table (its ``data`` is the store, ``changelog_topic`` the topic);
    ``app`` is its Faust app, whose producer sends. The sends are not awaited: Faust flushes the producer before it commits the source
    offsets, which is all the ordering the agents need.
    """

    def __init__(self, app: Any, table: Any) -> None:
        self.app = app
        self.table = table

    @property
    def topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    async def write(self, partition: int, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Store and send ``changes`` (key -> value, ``None`` deletes) on ``partition``."""
        store, topic, producer = self.table.data, self.topic, self.app.producer
        for key, value in changes.items():
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
            key_bytes, value_bytes = changelog_record(key, value)
            await producer.send(topic, key_bytes, value_bytes, partition, None, None)
