"""Sightings: one live prediction about one entity, the alerting agent's input.

The join sees each interaction and its prediction by ``interaction_id``. When it holds both
it reports a :class:`PredictedText`; the join agent names the entities of the text and
publishes one :class:`Sighting` per entity to ``<app id>-entity-sightings``, keyed by the
entity. That is the re-key by entity (what Faust's ``group_by`` does through a repartition
topic), so one entity's sightings stay in order on one partition for the alerting agent.

>>> s = Sighting("AAPL", "i-1", "tfns-sentiment", "$AAPL misses", 0, 0.9, "v3", 1_700_000_000_000)
>>> Sighting.parse(s.to_bytes()) == s
True
>>> Sighting.parse(b'{"entity": "AAPL"}')
Traceback (most recent call last):
    ...
ValueError: unreadable sighting: missing or mistyped field 'interaction_id'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

from schemas import limits

#: Texts travel to the alerting agent cut to this many characters (they become examples).
EXAMPLE_CHARS = 280

_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("entity", str),
    ("interaction_id", str),
    ("task", str),
    ("text", str),
    ("label", int),
    ("confidence", (int, float)),
    ("adapter_version", str),
    ("ts_ms", int),
)


@dataclass(frozen=True)
class PredictedText:
    """An interaction the join has seen together with its prediction."""

    interaction_id: str
    task: str
    text: str
    entity: str | None
    label: int
    confidence: float
    adapter_version: str
    ts_ms: int


@dataclass(frozen=True)
class Sighting:
    """One entity named by one predicted interaction. Key on the wire: the entity."""

    entity: str
    interaction_id: str
    task: str
    text: str
    label: int
    confidence: float
    adapter_version: str
    ts_ms: int

    @classmethod
    def of(cls, entity: str, seen: PredictedText) -> Sighting:
        return cls(
            entity,
            seen.interaction_id,
            seen.task,
            seen.text[:EXAMPLE_CHARS],
            seen.label,
            seen.confidence,
            seen.adapter_version,
            seen.ts_ms,
        )

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def parse(cls, raw: bytes | None) -> Sighting:
        """Read and check one record; raises ``ValueError`` naming what is wrong."""
        if raw is None or len(raw) > limits.MAX_RECORD_BYTES:
            raise ValueError("unreadable sighting: empty or too large")
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"unreadable sighting: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("unreadable sighting: not a JSON object")
        for name, kind in _FIELDS:
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"unreadable sighting: missing or mistyped field {name!r}")
        if not 0.0 <= data["confidence"] <= 1.0:
            raise ValueError(f"unreadable sighting: confidence {data['confidence']} not in [0, 1]")
        return cls(**{name: data[name] for name, _ in _FIELDS})
