"""The worker's internal events: what its agents send each other through Kafka.

Two internal topics carry them (see :mod:`streams.topology`):

``<app id>-join-ticks``
    :class:`JoinTick`, one per partition of the joined topics, so that an idle partition
    still expires its join state.
``<app id>-task-events``
    keyed by task, read by the task agent: :class:`Observations` (what the join saw of one
    task in one batch), :class:`AdapterPublished`, :class:`JobEnded` and :class:`TaskTick`.

Every event is a frozen dataclass. ``to_bytes()`` writes a JSON object (orjson) with a
``kind`` and named fields; :func:`parse_task_event` and each class's ``parse`` read it back
and raise :class:`~streams.errors.EventError` on anything else: not JSON, an unknown kind,
a missing or extra field, a value of the wrong type. The agents dead-letter such a record
and carry on.

Records written before these types existed (observations as positional lists, ticks as
``{"ts": ...}``) are still read, because a restarted worker replays the tail of its
task-events topic to rebuild its drift detectors.

>>> obs = Observations(
...     task="tfns-sentiment",
...     inputs=(12,),
...     predictions=(PredictionSeen(label=1, confidence=0.9, adapter_version="v3"),),
...     labelled=(LabelledSeen(partition=0, offset=7, label=1, predicted=1,
...                            confidence=0.9, ts_ms=1_700_000_000_000),),
... )
>>> raw = obs.to_bytes()
>>> raw[:44]
b'{"kind":"obs","task":"tfns-sentiment","input'
>>> parse_task_event(raw) == obs
True
>>> parse_task_event(b'{"kind": "gossip", "task": "tfns-sentiment"}')
Traceback (most recent call last):
...
streams.errors.EventError: task event: unknown kind 'gossip' (known: adapter, job_end, obs, tick)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self, TypeVar

import orjson

from schemas.tasks import get_task
from streams.errors import EventError

T = TypeVar("T")

#: The states of :class:`JobEnded` (``train-status`` states that end a job).
JOB_END_STATES = ("finished", "rejected", "superseded", "failed")


# --- parts of an observation ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PredictionSeen:
    """A prediction the join read: its label, top probability and adapter version."""

    label: int
    confidence: float
    adapter_version: str


@dataclass(frozen=True, slots=True)
class LabelledSeen:
    """A labelled example the join published, at ``offset`` of ``labelled``'s ``partition``.

    ``predicted`` and ``confidence`` are ``None`` when it went out without its prediction.
    """

    partition: int
    offset: int
    label: int
    predicted: int | None
    confidence: float | None
    ts_ms: int


# --- the events -------------------------------------------------------------------------
class _TaskEvent:
    """What every ``task-events`` event does: write itself, and read one of its kind."""

    __slots__ = ()
    kind: ClassVar[str]

    def to_bytes(self) -> bytes:
        return _dump(self)

    @classmethod
    def parse(cls, raw: bytes | None) -> Self:
        """Read a record that must hold this kind of event."""
        return _expect(parse_task_event(raw), cls)


@dataclass(frozen=True, slots=True)
class JoinTick:
    """The clock of the join: stream time may move to ``ts_ms`` on an idle partition.

    >>> JoinTick.parse(JoinTick(ts_ms=5).to_bytes())
    JoinTick(ts_ms=5)
    >>> JoinTick.parse(b'{"ts": 5}')  # written before ticks had a kind
    JoinTick(ts_ms=5)
    """

    kind: ClassVar[str] = "join_tick"
    ts_ms: int

    def to_bytes(self) -> bytes:
        return _dump(self)

    @classmethod
    def parse(cls, raw: bytes | None) -> JoinTick:
        data = _object(raw, "join tick")
        if "kind" not in data and data.keys() == {"ts"}:
            data = {"kind": cls.kind, "ts_ms": data["ts"]}
        return _read(cls, data, "join tick")


@dataclass(frozen=True, slots=True)
class Observations(_TaskEvent):
    """What one batch of the join saw of one task: for drift statistics and the windows.

    ``inputs`` holds one token count per interaction (see :mod:`streams.join`),
    ``predictions`` one entry per prediction read, ``labelled`` one per example published.
    """

    kind: ClassVar[str] = "obs"
    task: str
    inputs: tuple[int, ...] = ()
    predictions: tuple[PredictionSeen, ...] = ()
    labelled: tuple[LabelledSeen, ...] = ()


@dataclass(frozen=True, slots=True)
class AdapterPublished(_TaskEvent):
    """A verified adapter for ``task`` appeared on ``model-updates``."""

    kind: ClassVar[str] = "adapter"
    task: str
    version: str
    job_id: str | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class JobEnded(_TaskEvent):
    """A train job for ``task`` ended (``finished``, ``rejected`` or ``failed``)."""

    kind: ClassVar[str] = "job_end"
    task: str
    job_id: str
    state: str


@dataclass(frozen=True, slots=True)
class TaskTick(_TaskEvent):
    """The task agent's clock: windows may age out and schedules fire for ``task``."""

    kind: ClassVar[str] = "tick"
    task: str


TaskEvent = Observations | AdapterPublished | JobEnded | TaskTick
TASK_EVENTS: dict[str, type[Any]] = {
    kind.kind: kind for kind in (Observations, AdapterPublished, JobEnded, TaskTick)
}


def parse_task_event(raw: bytes | None) -> TaskEvent:
    """Read one ``task-events`` record; :class:`EventError` names what is wrong.

    >>> parse_task_event(b'{"kind": "tick", "task": "banking77-intent"}')
    TaskTick(task='banking77-intent')
    >>> parse_task_event(b'{"kind": "tick", "task": "astrology"}')
    Traceback (most recent call last):
    ...
    streams.errors.EventError: task event: task: unknown task 'astrology'
    """
    data = _object(raw, "task event")
    kind = data.get("kind")
    cls = TASK_EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError(
            f"task event: unknown kind {kind!r} (known: {', '.join(sorted(TASK_EVENTS))})"
        )
    return _read(cls, data, "task event")


# --- reading ----------------------------------------------------------------------------
class _Bad(Exception):
    """A value that does not fit; ``path`` says where (``labelled[3].offset``)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message, self.path = message, path

    def at(self, step: str) -> _Bad:
        joined = step + ("" if not self.path or self.path.startswith("[") else ".") + self.path
        return _Bad(self.message, joined)


def _object(raw: bytes | None, what: str) -> dict[str, Any]:
    if raw is None:
        raise EventError(f"{what}: empty record")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"{what}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EventError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _read(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """Build the event ``cls`` from ``data`` (its ``kind`` included), checking every field."""
    try:
        return _fields(cls, data, ignore=("kind",))
    except _Bad as bad:
        where = f"{bad.path}: " if bad.path else ""
        raise EventError(f"{what}: {where}{bad.message}") from None


def _fields(cls: type[T], data: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> T:
    readers = _READERS[cls]
    unknown = data.keys() - readers.keys() - set(ignore)
    if unknown:
        raise _Bad(f"unexpected field(s) {', '.join(sorted(unknown))}")
    values = {}
    for name, read in readers.items():
        if name not in data:
            raise _Bad(f"missing field {name!r}")
        try:
            values[name] = read(data[name])
        except _Bad as bad:
            raise bad.at(name) from None
    return cls(**values)


def _expect(event: TaskEvent, cls: type[T]) -> T:
    if not isinstance(event, cls):
        wanted = getattr(cls, "kind", cls.__name__)
        raise EventError(f"task event: expected kind {wanted!r}, got {event.kind!r}")
    return event


def _dump(event: Any) -> bytes:
    # kind is a ClassVar, so it is not a field; orjson writes nested dataclasses itself.
    body = {"kind": event.kind}
    body.update((f.name, getattr(event, f.name)) for f in fields(event))
    return orjson.dumps(body)


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise _Bad(f"expected a whole number >= 0, got {value!r:.60}")
    return value


def _prob(value: Any) -> float:
    if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
        raise _Bad(f"expected a probability in [0, 1], got {value!r:.60}")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise _Bad(f"expected a string of 1 to 256 characters, got {value!r:.60}")
    return value


def _task(value: Any) -> str:
    name = _text(value)
    try:
        get_task(name)
    except Exception:  # schemas says why at length; naming the task is enough here
        raise _Bad(f"unknown task {name!r}") from None
    return name


def _one_of(*allowed: str) -> Callable[[Any], str]:
    def one_of(value: Any) -> str:
        if value not in allowed:
            raise _Bad(f"expected one of {', '.join(allowed)}, got {value!r:.60}")
        return value

    return one_of


def _optional(read: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda value: None if value is None else read(value)


def _items(read: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    def items(value: Any) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _Bad(f"expected a list, got {value!r:.60}")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(read(item))
            except _Bad as bad:
                raise bad.at(f"[{index}]") from None
        return tuple(out)

    return items


def _part(cls: type[T], legacy: tuple[str, ...]) -> Callable[[Any], T]:
    """A nested record: an object of ``cls``'s fields, or (written before) a list of them."""

    def part(value: Any) -> T:
        if isinstance(value, list) and len(value) == len(legacy):
            value = dict(zip(legacy, value, strict=True))
        if not isinstance(value, dict):
            raise _Bad(f"expected an object with {', '.join(legacy)}, got {value!r:.60}")
        return _fields(cls, value)

    return part


_PREDICTION_FIELDS = ("label", "confidence", "adapter_version")
_LABELLED_FIELDS = ("partition", "offset", "label", "predicted", "confidence", "ts_ms")

_READERS: dict[type[Any], dict[str, Callable[[Any], Any]]] = {
    PredictionSeen: {"label": _int, "confidence": _prob, "adapter_version": _text},
    LabelledSeen: {
        "partition": _int,
        "offset": _int,
        "label": _int,
        "predicted": _optional(_int),
        "confidence": _optional(_prob),
        "ts_ms": _int,
    },
    JoinTick: {"ts_ms": _int},
    Observations: {
        "task": _task,
        "inputs": _items(_int),
        "predictions": _items(_part(PredictionSeen, _PREDICTION_FIELDS)),
        "labelled": _items(_part(LabelledSeen, _LABELLED_FIELDS)),
    },
    AdapterPublished: {
        "task": _task,
        "version": _text,
        "job_id": _optional(_text),
        "created_ms": _int,
    },
    JobEnded: {"task": _task, "job_id": _text, "state": _one_of(*JOB_END_STATES)},
    TaskTick: {"task": _task},
}

__all__ = [
    "AdapterPublished",
    "EventError",
    "JobEnded",
    "JoinTick",
    "LabelledSeen",
    "Observations",
    "PredictionSeen",
    "TaskEvent",
    "TaskTick",
    "parse_task_event",
]
