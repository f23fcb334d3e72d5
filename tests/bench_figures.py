"""What every benchmark line must satisfy, whatever its size: the checks behind the smoke test.

``problems(name, figures)`` lists what is wrong with one JSON line of ``streamtune bench NAME``
(empty when nothing is). It checks figures, not speed: a figure that could not be measured
(NaN, infinity), a ratio that is not its value over its baseline, a proportion outside [0, 1],
and anything lost or answered twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from streamtune.bench.results import ROWS

#: Keys that hold a ratio (``ratio``, ``ratio_vs_raw``, ``p99_ratio_during_swaps``,
#: ``speedup_vs_baseline``): each must equal value ÷ baseline where the README table names
#: all three. (Keys such as ``accuracy_gain_vs_base_points`` are differences, not ratios.)
RATIO_KEY = re.compile(r"^(ratio|.*_ratio|speedup_)")
#: Keys that hold an accuracy, a precision or a recall: a share in [0, 1]...
PROPORTION_KEY = re.compile(r"acc|precision|recall")
#: ...unless they carry a unit: ``accuracy_delta_vs_fp32_points``, ``precision_probe_ms``.
UNIT_SUFFIX = re.compile(r"_(points|ms|s|seconds)$")
#: The benchmarks round each rate and latency to at least one decimal and each ratio to at
#: least two: the coarsest rounding a reported figure may carry.
COARSEST_FIGURE, COARSEST_RATIO = 0.05, 0.005


def numbers(value: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """Every number in ``value`` (nested lists and dicts included), with a dotted key.

    >>> list(numbers({"a": 1, "b": [2.5, {"c": None}], "d": "x", "e": True}))
    [('a', 1), ('b.0', 2.5)]
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{key}.{i}" if key else str(i))


def half_unit(value: float, coarsest: float) -> float:
    """Half the last decimal place that ``value`` was rounded to (0 for an int), at most
    ``coarsest``: the most that rounding moved it.

    >>> half_unit(41849.9, 0.05), half_unit(0.463, 0.005), half_unit(484.0, 0.05)
    (0.05, 0.0005, 0.05)
    >>> half_unit(0.5, 0.005), half_unit(12, 0.05)  # 0.500 printed as 0.5; ints are exact
    (0.005, 0.0)
    """
    if isinstance(value, int):
        return 0.0
    text = repr(float(value))
    if "e" in text or "." not in text:
        return coarsest
    decimals = len(text.split(".", 1)[1])
    return min(0.5 * 10.0**-decimals, coarsest)


def ratio_agrees(ratio: float, value: float, baseline: float) -> bool:
    """Whether ``ratio`` is ``value / baseline`` up to the rounding of all three: some value
    and baseline within half a unit of the printed ones give a quotient within half a unit
    of the printed ratio (a relative tolerance of about one part in ``value`` per decimal).

    >>> ratio_agrees(0.463, 41849.9, 90417.8), ratio_agrees(1.58, 227.4, 143.6)
    (True, True)
    >>> ratio_agrees(0.47, 41849.9, 90417.8), ratio_agrees(0.5, 3.0, 1.0)
    (False, False)
    """
    dv, db = half_unit(value, COARSEST_FIGURE), half_unit(baseline, COARSEST_FIGURE)
    dr = half_unit(ratio, COARSEST_RATIO) + 1e-9 * abs(ratio)  # float noise in the round()
    low = (value - dv) / (baseline + db) if baseline + db > 0 else -math.inf
    if baseline - db <= 0:  # a baseline that rounds to 0: any large quotient fits
        return ratio >= low - dr
    high = (value + dv) / (baseline - db)
    return low - dr <= ratio <= high + dr


def problems(name: str, figures: dict[str, Any]) -> list[str]:
    """What is wrong with one line of ``streamtune bench NAME --json``; empty if nothing."""
    found = [
        f"{key} = {number} is not finite"
        for key, number in numbers(figures)
        if not math.isfinite(number)
    ]
    for row in ROWS:
        if row.bench != name or row.ratio is None or not RATIO_KEY.match(row.ratio):
            continue
        if row.baseline is None:
            continue
        ratio, value, baseline = (figures.get(k) for k in (row.ratio, row.value, row.baseline))
        if not all(
            isinstance(x, int | float) and math.isfinite(x) for x in (ratio, value, baseline)
        ):
            continue  # missing (the key check says so) or not finite (said above)
        if not ratio_agrees(ratio, value, baseline):
            found.append(
                f"{row.ratio} = {ratio}, but {row.value} / {row.baseline} = "
                f"{value} / {baseline} = {value / baseline if baseline else math.inf:.4g}"
            )
    for key, number in figures.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            continue  # a string such as precision="bf16", or None where nothing was measured
        share = PROPORTION_KEY.search(key) and not UNIT_SUFFIX.search(key)
        if share and not 0.0 <= number <= 1.0:
            found.append(f"{key} = {number} is not in [0, 1]")
    for key in ("lost", "duplicated"):
        if key in figures and figures[key] != 0:
            found.append(f"{key} = {figures[key]}, not 0")
    return found
