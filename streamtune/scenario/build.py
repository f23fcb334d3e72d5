"""The adaptation scenarios of the demo, ``bench adapt`` and the end-to-end test.

Finance tweets (TFNS valid, 3 classes) and then a domain shift to retail-investor posts:
Surge AI's crypto Reddit comments and stock tweets, whose Negative/Positive labels map to
Bearish/Bullish. A model that learned finance news calls many of those posts Neutral, so
its accuracy falls at the shift. Three shapes of shift, built only from ``data/``:

- ``abrupt``: ``pre`` tweets, then the posts;
- ``gradual``: ``pre`` tweets, then ``ramp`` events in which the posts' share rises linearly
  from 0 to 1, then the remaining posts;
- ``recurring``: tweets, posts, tweets again, posts again.

Each part is shuffled with a fixed seed; no text appears twice in a scenario.

>>> s = build(Path("data"), "gradual", pre=100, ramp=200)
>>> s.shift_at, s.domains[99:101], s.domains[-1]
(100, ['tfns', 'tfns'], 'surge')
>>> ramp = s.domains[100:300]
>>> ramp[:50].count("surge") < ramp[-50:].count("surge")  # the new domain's share rises
True
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from schemas.limits import MAX_TEXT_CHARS
from streamtune.replay import ReplayRow

SURGE = {"Negative": 0, "Positive": 1}  # Bearish, Bullish
SHAPES = ("abrupt", "gradual", "recurring")


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: list[ReplayRow]  # line = position in the stream, from 0
    shift_at: int  # the first event of the first shift
    domains: list[str]  # "tfns" or "surge", per event

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.rows]  # type: ignore[misc]


def tfns_texts(data_dir: Path) -> list[tuple[str, int]]:
    with (data_dir / "tfns" / "valid.csv").open(newline="", encoding="utf-8") as handle:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(handle)]


def surge_texts(data_dir: Path) -> list[tuple[str, int]]:
    out = []
    with (data_dir / "surge_crypto" / "sentiment.csv").open(newline="", encoding="utf-8") as handle:
        out += [(r["Comment Text"], SURGE[r["Sentiment"]]) for r in csv.DictReader(handle)]
    with (data_dir / "surge_stock" / "sentiment.csv").open(newline="", encoding="utf-8") as handle:
        out += [(r["Tweet Text"], SURGE[r["Sentiment"]]) for r in csv.DictReader(handle)]
    return out


def _usable(pairs: list[tuple[str, int]], rng: random.Random) -> list[tuple[str, int]]:
    # The few posts beyond the contract's text limit would only be dead-lettered; repeated
    # texts would let a model be scored on what it was trained on.
    seen: set[str] = set()
    out = []
    for text, label in pairs:
        if text.strip() and len(text) <= MAX_TEXT_CHARS and text not in seen:
            seen.add(text)
            out.append((text, label))
    rng.shuffle(out)
    return out


def build(
    data_dir: Path, shape: str = "abrupt", *, pre: int = 400, post: int | None = None,
    ramp: int = 1000, seed: int = 0,
) -> Scenario:  # fmt: skip
    """The scenario ``shape`` (see the module docstring); ``post`` limits the surge posts."""
    if shape not in SHAPES:
        raise ValueError(f"unknown scenario {shape!r}; valid: {', '.join(SHAPES)}")
    rng = random.Random(seed)  # noqa: S311 - a reproducible order, not a secret
    tweets = _usable(tfns_texts(data_dir), rng)
    posts = _usable(surge_texts(data_dir), rng)
    posts = posts[:post] if post is not None else posts
    stream: list[tuple[str, int, str]] = [(t, y, "tfns") for t, y in tweets[:pre]]
    tweets, p = tweets[pre:], 0
    if shape == "abrupt":
        stream += [(t, y, "surge") for t, y in posts]
    elif shape == "gradual":
        t = 0
        for i in range(ramp):
            if p < len(posts) and rng.random() < (i + 1) / ramp:
                stream.append((*posts[p], "surge"))
                p += 1
            else:
                stream.append((*tweets[t], "tfns"))
                t += 1
        stream += [(*post_, "surge") for post_ in posts[p:]]
    else:
        half = len(posts) // 2
        stream += [(t, y, "surge") for t, y in posts[:half]]
        stream += [(t, y, "tfns") for t, y in tweets[: max(1, pre * 3 // 4)]]
        stream += [(t, y, "surge") for t, y in posts[half:]]
    rows = [ReplayRow(i, text, label, None) for i, (text, label, _) in enumerate(stream)]
    return Scenario(shape, rows, pre, [d for _, _, d in stream])
