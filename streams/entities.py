"""Which entities a text is about: cashtags, tickers and a configurable list of names.

An :class:`EntityExtractor` finds, in order of first mention and without repeats:

- cashtags: ``$AAPL``, ``$BRK.B``, ``$btc`` (upper-cased; ``$5``, ``$1.5bn`` are money);
- names from an entity list, each with its aliases, matched case-insensitively on word
  boundaries, so that "Reliance Industries" and "RIL" are one entity.

The interaction's own ``entity`` field wins when it is set: it is the producer's word.

Another recogniser (an NER model, say) plugs in through the :class:`Recogniser` protocol:
any callable from a text to entity names. Recognisers run after the cashtags and the list,
and what they return goes through the same alias map.

>>> x = EntityExtractor.from_rows([("RELIANCE", "Reliance Industries"), ("RELIANCE", "RIL")])
>>> x.extract("RIL and $aapl up; Reliance Industries beats, $BRK.B flat, $5 off")
('RELIANCE', 'AAPL', 'BRK.B')
>>> x.extract("anything at all", entity="$TSLA")
('TSLA',)
>>> x.extract("nothing to see")
()
>>> EntityExtractor(recognisers=[lambda text: ["ril"] if "refinery" in text else []],
...                 aliases={"RIL": "RELIANCE"}).extract("refinery fire")
('RELIANCE',)
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from streamtune.core.errors import ConfigError

#: A cashtag: ``$`` then a letter, up to 10 letters/digits, an optional ``.X`` class suffix.
CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:\.[A-Za-z]{1,2})?)(?![\w.])")
#: Most entities reported for one text; a spam post listing 40 tickers is not 40 sightings.
MAX_ENTITIES = 3
#: The wire contract's entity pattern (``schemas.fields.Entity``), checked before we emit one.
_VALID = re.compile(r"^[A-Za-z0-9$][A-Za-z0-9$._\-]{0,31}$")


class Recogniser(Protocol):
    """Anything that names the entities in a text, e.g. a wrapped NER model."""

    def __call__(self, text: str) -> Iterable[str]: ...


def normalise(name: str) -> str:
    """The canonical spelling of an entity: no leading ``$``, upper case, spaces as ``_``.

    >>> normalise(" $brk.b "), normalise("Reliance Industries")
    ('BRK.B', 'RELIANCE_INDUSTRIES')
    """
    return "_".join(name.strip().lstrip("$").upper().split())


@dataclass
class EntityExtractor:
    """Finds entities in texts. ``aliases`` maps a normalised alias to its entity."""

    aliases: dict[str, str] = field(default_factory=dict)
    recognisers: Sequence[Recogniser] = ()
    max_entities: int = MAX_ENTITIES
    _names: re.Pattern[str] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.aliases = {normalise(a): normalise(e) for a, e in self.aliases.items()}
        words = sorted({a.replace("_", " ") for a in self.aliases}, key=len, reverse=True)
        if words:
            spelled = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words)
            self._names = re.compile(rf"(?<![\w$])(?:{spelled})(?!\w)", re.IGNORECASE)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str]], **kwargs: object) -> EntityExtractor:
        """From ``(entity, alias)`` pairs; every entity is also an alias of itself."""
        aliases: dict[str, str] = {}
        for entity, alias in rows:
            aliases[entity] = entity
            if alias.strip():
                aliases[alias] = entity
        return cls(aliases=aliases, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_csv(cls, path: Path | None, **kwargs: object) -> EntityExtractor:
        """From a CSV of ``entity,alias`` rows (a header row naming them is skipped)."""
        if path is None:
            return cls(**kwargs)  # type: ignore[arg-type]
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.reader(handle) if r and not r[0].startswith("#")]
        except OSError as exc:
            raise ConfigError(f"cannot read the entities file {path}: {exc}") from None
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["entity", "alias"]:
            rows = rows[1:]
        bad = [i for i, r in enumerate(rows, 1) if len(r) < 2 or not _VALID.match(normalise(r[0]))]
        if bad:
            raise ConfigError(
                f"entities file {path}: rows {bad[:5]} are not 'entity,alias' with an entity "
                "of 1-32 letters, digits or . _ -"
            )
        return cls.from_rows(((r[0], r[1]) for r in rows), **kwargs)  # type: ignore[arg-type]

    def extract(self, text: str, entity: str | None = None) -> tuple[str, ...]:
        """The entities of ``text``; just ``entity`` when the producer named one."""
        if entity:
            name = self._canonical(entity)
            return (name,) if name else ()
        found: dict[str, None] = {}
        hits = [(m.start(), m.group(1)) for m in CASHTAG.finditer(text)]
        if self._names is not None:
            hits += [(m.start(), m.group(0)) for m in self._names.finditer(text)]
        for _, name in sorted(hits):
            self._add(found, name)
        for recognise in self.recognisers:
            for name in recognise(text):
                self._add(found, name)
        return tuple(found)[: self.max_entities]

    def _add(self, found: dict[str, None], name: str) -> None:
        canonical = self._canonical(name)
        if canonical:
            found.setdefault(canonical, None)

    def _canonical(self, name: str) -> str | None:
        key = normalise(name)
        key = self.aliases.get(key, key)
        return key if _VALID.match(key) else None
