"""The checks the bench smoke test applies to each line: a good line passes, and each kind of
bad figure (not finite, a wrong ratio, a share outside [0, 1], anything lost) is caught."""

from __future__ import annotations

import copy

import pytest

from tests.bench_figures import problems

#: Lines as the benchmarks print them (figures from bench/results.json, trimmed).
GOOD = {
    "replay": {
        "bench": "replay", "rows": 10000, "replay_rows_per_s": 41849.9,
        "raw_aiokafka_rows_per_s": 90417.8, "ratio_vs_raw": 0.463, "bad_rows": 0,
    },
    "inference": {
        "bench": "inference", "device": "cpu", "precision": "bf16", "precision_probe_ms": 41.5,
        "serve_texts_per_s": 367.5, "serve_fp32_texts_per_s": 227.4,
        "hf_pipeline_fp32_best_texts_per_s": 143.6, "hf_pipeline_bf16_texts_per_s": 237.8,
        "ratio_fp32_vs_pipeline_fp32": 1.58, "ratio_vs_pipeline_bf16": 1.55,
        "flop_bound_texts_per_s": 728.5, "ratio_vs_flop_bound": 0.504, "accuracy": 0.7236,
        "fp32_accuracy": 0.7249, "accuracy_delta_vs_fp32_points": -0.13,
    },
    "swap": {
        "bench": "swap", "lost": 0, "duplicated": 0, "p99_ms_during_swaps": 485.0,
        "p99_ms_baseline": 484.0, "p99_ratio_during_swaps": 1.002, "max_gap_ms": 290.4,
    },
    "train": {
        "bench": "train", "train_examples_per_s": 183.9, "baseline_train_examples_per_s": 73.8,
        "speedup_vs_baseline": 2.49, "valid_accuracy": 0.8576, "base_valid_accuracy": 0.7236,
        "accuracy_gain_vs_base_points": 13.4, "precision": "fp32",
    },
    "alerts": {
        "bench": "alerts", "alert_precision": None, "alert_recall": 1.0,
        "baseline_alert_precision": 0.25, "baseline_alert_recall": 1.0,
    },
    "poison": {
        "bench": "poison", "defended_accuracy": 0.85, "clean_accuracy": 0.86,
        "defended_loss_points": 1.0, "trust": {"a": 0.9}, "dropped": ["s1"],
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_good_line_has_no_problems(name):
    assert problems(name, GOOD[name]) == []


def test_a_ratio_at_the_edge_of_its_rounding_passes():
    # 0.1 / 0.3 = 0.333, but both were rounded to one decimal: 0.14 / 0.28 = 0.5 is possible.
    line = {"bench": "replay", "replay_rows_per_s": 0.1, "raw_aiokafka_rows_per_s": 0.3,
            "ratio_vs_raw": 0.5}  # fmt: skip
    assert problems("replay", line) == []
    line["ratio_vs_raw"] = 0.7  # more than 0.15 / 0.25 = 0.6 allows
    assert problems("replay", line) != []


def bad(name: str, **changes: object) -> list[str]:
    line = copy.deepcopy(GOOD[name])
    line.update(changes)
    return problems(name, line)


@pytest.mark.parametrize(
    ("name", "changes", "says"),
    [
        ("replay", {"replay_rows_per_s": float("nan")}, "replay_rows_per_s = nan is not finite"),
        ("swap", {"max_gap_ms": float("inf")}, "max_gap_ms = inf is not finite"),
        ("poison", {"trust": {"a": float("nan")}}, "trust.a = nan is not finite"),
        ("replay", {"ratio_vs_raw": 0.47}, "ratio_vs_raw = 0.47, but replay_rows_per_s"),
        ("replay", {"ratio_vs_raw": 2.16}, "ratio_vs_raw = 2.16"),  # baseline / value
        ("inference", {"ratio_vs_flop_bound": 0.51}, "ratio_vs_flop_bound = 0.51"),
        ("swap", {"p99_ratio_during_swaps": 1.5}, "p99_ratio_during_swaps = 1.5"),
        ("train", {"speedup_vs_baseline": 2.6}, "speedup_vs_baseline = 2.6"),
        ("inference", {"accuracy": 1.3}, "accuracy = 1.3 is not in [0, 1]"),
        ("train", {"valid_accuracy": -0.1}, "valid_accuracy = -0.1 is not in [0, 1]"),
        ("alerts", {"alert_recall": 1.01}, "alert_recall = 1.01 is not in [0, 1]"),
        ("alerts", {"baseline_alert_precision": 2}, "baseline_alert_precision = 2 is not in"),
        ("swap", {"lost": 1}, "lost = 1, not 0"),
        ("swap", {"duplicated": 3}, "duplicated = 3, not 0"),
    ],
)
def test_each_bad_figure_is_caught(name, changes, says):
    found = bad(name, **changes)
    assert any(says in p for p in found), found


def test_figures_with_units_or_words_are_not_taken_for_shares():
    # A probe time, a delta in points and a precision named by its dtype are not in [0, 1].
    assert bad("inference", precision_probe_ms=812.0, accuracy_delta_vs_fp32_points=-7.5) == []
    assert bad("inference", precision="bf16") == []
