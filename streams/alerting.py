"""The surge detector: per entity, is bearish (or bullish) news surging against its baseline?

Each entity keeps a sliding window of its newest sightings (at most ``window_events``, none
older than ``window_ms``), each weighted by the prediction's confidence. A sighting that
leaves the window folds into the entity's own baseline: exponentially weighted shares of
each sentiment over about ``baseline_events`` sightings, started from a weak prior.

For each watched sentiment (bearish, bullish) a one-sided Bernoulli CUSUM asks whether
the entity's share rose from its baseline ``p0`` to ``p0 + min_lift``: each sighting adds
its confidence times the log-likelihood ratio of the two shares, and the sum never goes
below zero (Page's CUSUM). It accumulates a sustained rise quickly and forgets noise.

A surge starts when the CUSUM reaches ``h_fire``, the window's weighted share ``p`` is at
least ``min_lift`` above ``p0``, the window holds at least ``min_events`` and the baseline
at least ``min_baseline_events``. It is one surge until the CUSUM falls below ``h_clear``
(hysteresis): one alert, with an id derived from the sighting that fired it, so a replay
after a crash repeats the same id. A new surge of the same entity and sentiment alerts
again only ``cooldown_ms`` after the last alert. The alert also reports the window's
binomial z-score against the baseline, ``(p - p0) / sqrt(p0 (1 - p0) / n)`` on the
window's effective size ``n`` (Kish: ``(sum w)^2 / sum w^2``). While a surge is active,
the entity's baseline is frozen.

State is bounded: an entity not seen for ``evict_after_ms`` of stream time is forgotten,
and beyond ``max_entities`` the longest-quiet ones go first. Stream time is the newest
sighting's time, each clamped to at most ``max_ahead_ms`` past the worker's clock: a
producer's timestamp a day ahead must not make every other entity look a day quiet.
Nothing here talks to Kafka.

>>> cfg = AlertConfig(window_events=10, min_events=8, min_baseline_events=20, h_fire=3.0)
>>> book = AlertBook(cfg)
>>> T = 1_700_000_000_000
>>> steady = [0, 1, 2, 2, 1] * 8            # 20% bearish, 40% bullish, 40% neutral
>>> burst = [0] * 10                        # then only bearish
>>> fired = []
>>> for i, label in enumerate(steady + burst + steady):
...     s = Sighting("ACME", f"i{i}", "tfns-sentiment", f"text {i}", label, 0.9, "v1", T + i)
...     fired += [(i, a.kind, a.count) for a in book.observe(s, partition=0, offset=i)]
>>> fired                                   # one alert, a few sightings into the burst
[(44, 'bearish_surge', 10)]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from schemas import limits
from schemas.fields import clamp_ts, now_ms
from schemas.tasks import get_task
from streams.sightings import Sighting

if TYPE_CHECKING:
    from streamtune.core.layers import AlertSettings

#: Texts an alert carries as examples.
MAX_EXAMPLES = 3


@dataclass(frozen=True)
class AlertConfig:
    """The detector's settings; see the module docstring."""

    task: str = "tfns-sentiment"
    window_events: int = 20
    window_ms: int = 3_600_000
    baseline_events: int = 500
    min_baseline_events: int = 50
    min_events: int = 10
    h_fire: float = 7.5
    h_clear: float = 1.0
    min_lift: float = 0.3
    cooldown_ms: int = 1_800_000
    evict_after_ms: int = 86_400_000
    max_entities: int = 10_000
    prior_events: float = 10.0
    max_ahead_ms: int = limits.MAX_AHEAD_MS

    @classmethod
    def from_settings(cls, alerts: AlertSettings) -> AlertConfig:
        """The detector as configured (``STREAMTUNE_ALERT_*``; ``settings.alerts``).

        >>> from streamtune.core.layers import AlertSettings
        >>> AlertConfig.from_settings(AlertSettings(cusum_h=5.0, cusum_clear=9.0)).h_clear
        5.0
        """
        a = alerts
        return cls(
            task=a.task,
            window_events=a.window_events,
            window_ms=int(a.window_s * 1000),
            baseline_events=a.baseline_events,
            min_baseline_events=a.min_baseline_events,
            min_events=a.min_events,
            h_fire=a.cusum_h,
            h_clear=min(a.cusum_clear, a.cusum_h),
            min_lift=a.min_lift,
            cooldown_ms=int(a.cooldown_s * 1000),
            evict_after_ms=int(a.evict_after_s * 1000),
            max_entities=a.max_entities,
            max_ahead_ms=int(a.max_ahead_s * 1000),
        )

    def watched(self) -> dict[str, int]:
        """Alert kind -> label index, for the sentiments of the task that are watched.

        >>> AlertConfig().watched()
        {'bearish_surge': 0, 'bullish_surge': 1}
        """
        labels = [name.lower() for name in get_task(self.task).labels]
        return {
            f"{name}_surge": labels.index(name) for name in ("bearish", "bullish") if name in labels
        }


@dataclass(frozen=True)
class Surge:
    """One alert's content, before it becomes an :class:`~schemas.messages.Alert`."""

    alert_id: str
    entity: str
    kind: str
    task: str
    share: float
    baseline_share: float
    z: float
    count: int
    baseline_events: float
    window_start_ts_ms: int
    window_end_ts_ms: int
    examples: tuple[str, ...]
    adapter_version: str
    trigger_interaction_id: str


@dataclass
class EntityState:
    """What the detector keeps about one entity; stored as one table value (plain JSON)."""

    entity: str
    partition: int = 0
    pos: int = -1  # the last sightings offset applied: a replayed record is skipped
    seen: int = 0  # sightings applied (the baseline skips those of a surge)
    last_ts: int = 0
    window: list[list[Any]] = field(default_factory=list)  # [label, weight, ts], oldest first
    base: dict[str, float] = field(default_factory=dict)  # label index -> decayed weight
    base_total: float = 0.0
    base_events: int = 0
    active: dict[str, bool] = field(default_factory=dict)  # kind -> in a surge
    cusum: dict[str, float] = field(default_factory=dict)  # kind -> CUSUM statistic
    last_alert: dict[str, int] = field(default_factory=dict)  # kind -> ts of the last alert
    examples: dict[str, list[str]] = field(default_factory=dict)  # label -> newest texts
    adapter_version: str = "base"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntityState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def alert_id(entity: str, kind: str, interaction_id: str) -> str:
    """The same surge fired by the same sighting always has the same id.

    >>> alert_id("AAPL", "bearish_surge", "i-7")
    'alert-3c10f1ef71605d92403eb67efcbd74e7'
    """
    digest = hashlib.sha256(f"{entity}\x00{kind}\x00{interaction_id}".encode()).hexdigest()
    return f"alert-{digest[:32]}"


class AlertBook:
    """Detector state for the entities of one worker, in a mapping (the table's store).

    ``newest_ms`` is the stream time: the newest sighting's time, clamped by ``clock``.
    """

    def __init__(
        self,
        config: AlertConfig,
        store: dict[str, Any] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.config = config
        self.clock = clock
        self.newest_ms = 0
        self.store: dict[str, Any] = {} if store is None else store
        self.kinds = config.watched()
        self.states: dict[str, EntityState] = {}
        self._dirty: dict[str, EntityState | None] = {}
        self._partitions: dict[str, int] = {}
        self.counts = {"sightings": 0, "alerts": 0, "suppressed": 0, "evicted": 0}

    def observe(self, s: Sighting, *, partition: int, offset: int) -> list[Surge]:
        """Apply one sighting; the surges it starts (none for a replayed offset)."""
        if s.task != self.config.task:
            return []
        ts = clamp_ts(s.ts_ms, self.clock(), self.config.max_ahead_ms)
        if ts != s.ts_ms:
            s = replace(s, ts_ms=ts)
        self.newest_ms = max(self.newest_ms, ts)
        state = self.state(s.entity, partition)
        if offset <= state.pos and state.partition == partition:
            return []
        state.partition, state.pos = partition, offset
        self.counts["sightings"] += 1
        state.seen += 1
        state.last_ts = max(state.last_ts, s.ts_ms)
        state.adapter_version = s.adapter_version
        self._slide(state, s.ts_ms)
        state.window.append([s.label, max(s.confidence, 1e-3), s.ts_ms])
        texts = state.examples.setdefault(str(s.label), [])
        texts.insert(0, s.text)
        del texts[MAX_EXAMPLES:]
        self._dirty[s.entity] = state
        return [surge for kind in self.kinds if (surge := self._test(state, kind, s))]

    def state(self, entity: str, partition: int = 0) -> EntityState:
        state = self.states.get(entity)
        if state is None:
            stored = self.store.get(entity)
            state = EntityState.from_dict(stored) if stored else EntityState(entity, partition)
            self.states[entity] = state
        return state

    def remember_alert(self, entity: str, kind: str, ts_ms: int, partition: int) -> None:
        """An alert read back from ``alerts``: no new one for it within the cooldown."""
        state = self.state(entity, partition)
        if ts_ms > state.last_alert.get(kind, 0):
            state.last_alert[kind] = ts_ms
            state.active[kind] = True  # it may still be running; it must clear first
            self._dirty[entity] = state

    def evict(self, now_ms: int) -> list[str]:
        """Forget quiet entities, and the quietest beyond ``max_entities``; their names."""
        quiet = {
            e for e, st in self.states.items() if now_ms - st.last_ts > self.config.evict_after_ms
        }
        for entity, value in self.store.items():
            if (
                entity not in self.states
                and now_ms - value.get("last_ts", 0) > self.config.evict_after_ms
            ):
                quiet.add(entity)
        names = {*self.states, *self.store} - quiet
        extra = len(names) - self.config.max_entities
        if extra > 0:
            ranked = sorted(names, key=lambda e: self._last_ts(e))
            quiet.update(ranked[:extra])
        for entity in quiet:
            state = self.states.pop(entity, None)
            stored = self.store.get(entity)
            partition = state.partition if state else (stored or {}).get("partition", 0)
            self._partitions[entity] = partition
            self._dirty[entity] = None
        self.counts["evicted"] += len(quiet)
        return sorted(quiet)

    def changes(self) -> dict[str, tuple[int, dict[str, Any] | None]]:
        """Entities to write to the changelog: ``entity -> (partition, value or None)``."""
        out: dict[str, tuple[int, dict[str, Any] | None]] = {}
        for entity, state in self._dirty.items():
            if state is None:
                self.store.pop(entity, None)
                out[entity] = (self._partitions.pop(entity, 0), None)
            else:
                value = state.to_dict()
                self.store[entity] = value
                out[entity] = (state.partition, value)
        self._dirty = {}
        return out

    def forget(self, partitions: set[int]) -> None:
        """Partitions moved to another worker: drop their entities from memory."""
        for entity, state in list(self.states.items()):
            if state.partition in partitions:
                del self.states[entity]

    # --- rules --------------------------------------------------------------------------
    def _last_ts(self, entity: str) -> int:
        state = self.states.get(entity)
        return state.last_ts if state else self.store.get(entity, {}).get("last_ts", 0)

    def _slide(self, state: EntityState, now_ms: int) -> None:
        """Move sightings that leave the window (by count or by age) into the baseline.

        While a surge is active the baseline is frozen: a surge's sightings are not the
        entity's normal, and folding them in would make the other sentiments look low, so
        that their return to normal after the surge would read as a surge of its own.
        """
        cfg = self.config
        decay = 1.0 - 1.0 / cfg.baseline_events
        window = state.window
        frozen = any(state.active.values())
        while window and (
            len(window) >= cfg.window_events or now_ms - window[0][2] > cfg.window_ms
        ):
            label, weight, _ = window.pop(0)
            if frozen:
                continue
            for key in state.base:
                state.base[key] *= decay
            state.base[str(label)] = state.base.get(str(label), 0.0) + weight
            state.base_total = state.base_total * decay + weight
            state.base_events += 1

    def _cusum(self, state: EntityState, kind: str, p0: float, hit: bool, weight: float) -> float:
        """Bernoulli CUSUM of "share rose from ``p0`` to ``p0 + min_lift``", confidence-weighted."""
        p1 = min(0.99, p0 + max(self.config.min_lift, 0.05))
        llr = math.log(p1 / p0) if hit else math.log((1.0 - p1) / (1.0 - p0))
        value = state.cusum.get(kind, 0.0) + weight * llr
        value = min(max(0.0, value), 2.0 * self.config.h_fire)  # bounded: a surge clears
        state.cusum[kind] = round(value, 6)
        return value

    def _test(self, state: EntityState, kind: str, s: Sighting) -> Surge | None:
        cfg = self.config
        label = self.kinds[kind]
        total = sum(w for _, w, _ in state.window)
        share = sum(w for lab, w, _ in state.window if lab == label) / total
        n_eff = total * total / sum(w * w for _, w, _ in state.window)
        prior = 1.0 / len(get_task(cfg.task).labels)
        p0 = (state.base.get(str(label), 0.0) + prior * cfg.prior_events) / (
            state.base_total + cfg.prior_events
        )
        z = (share - p0) / math.sqrt(p0 * (1.0 - p0) / n_eff)
        cusum = self._cusum(state, kind, p0, s.label == label, s.confidence)
        if state.active.get(kind):
            if cusum < cfg.h_clear:
                state.active[kind] = False
            return None
        if (
            len(state.window) < cfg.min_events
            or state.base_events < cfg.min_baseline_events
            or cusum < cfg.h_fire
            or share - p0 < cfg.min_lift
        ):
            return None
        state.active[kind] = True  # one surge, however long it lasts
        last = state.last_alert.get(kind)
        if last is not None and s.ts_ms - last < cfg.cooldown_ms:
            self.counts["suppressed"] += 1
            return None
        state.last_alert[kind] = s.ts_ms
        self.counts["alerts"] += 1
        return Surge(
            alert_id=alert_id(state.entity, kind, s.interaction_id),
            entity=state.entity,
            kind=kind,
            task=cfg.task,
            share=round(share, 4),
            baseline_share=round(p0, 4),
            z=round(z, 3),
            count=len(state.window),
            baseline_events=round(state.base_total, 2),
            window_start_ts_ms=state.window[0][2],
            window_end_ts_ms=s.ts_ms,
            examples=tuple(state.examples.get(str(label), ())[:MAX_EXAMPLES]),
            adapter_version=s.adapter_version,
            trigger_interaction_id=s.interaction_id,
        )
