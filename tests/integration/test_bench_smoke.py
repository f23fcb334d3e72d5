"""Every benchmark runs, at a tiny size, through the real entry point (``streamtune bench NAME
--json``, the way ``make bench`` runs it), and prints the keys its readers rely on.

The figures at these sizes mean nothing as speeds; what this catches is a benchmark that
crashes (as ``bench stream`` did when ``--rows`` lost its default), silently drops a key that
the README table or the issue's checks read, or prints a figure that cannot be right at any
size (``tests.bench_figures.problems``: a NaN, a ratio that is not value ÷ baseline, an
accuracy outside [0, 1], an interaction lost or answered twice).
"""

from __future__ import annotations

import pytest

from streamtune.bench.results import ROWS, run_one
from streamtune.cli.bench import BENCHES
from tests.bench_figures import problems

pytestmark = pytest.mark.integration

#: The smallest options each benchmark offers. A benchmark added to ``BENCHES`` must be
#: added here too (the test below says so), so that none goes untested.
TINY: dict[str, tuple[str, ...]] = {
    "replay": ("--rows", "200"),
    "client": ("--rows", "200"),
    "stream": ("--rows", "200"),
    "drift": ("--rows", "1000", "--seeds", "1"),
    "inference": ("--rows", "16"),
    "swap": ("--swaps", "2"),
    "train": ("--rows", "64", "--epochs", "1", "--rounds", "2"),
    "adapt": ("--rows", "20", "--rate", "100", "--scenario", "abrupt", "--oracle-every", "400"),
    "poison": ("--rows", "60", "--epochs", "1"),
    "alerts": ("--rows", "4500"),  # its floor: 30 tickers need a baseline each
}

#: Keys named by the issue that introduced the results file, beyond those the table reads.
REQUIRED: dict[str, set[str]] = {
    "swap": {
        "swaps", "lost", "duplicated", "publish_to_live_ms", "p99_ratio_during_swaps",
        "max_gap_ms", "apply_ms",
    },
    "inference": {
        "hf_pipeline_fp32_best_texts_per_s", "hf_pipeline_best_batch",
        "hf_pipeline_bf16_texts_per_s", "serve_fp32_texts_per_s", "serve_texts_per_s",
        "ratio_fp32_vs_pipeline_fp32", "flop_bound_texts_per_s", "ratio_vs_flop_bound",
        "device", "precision", "precision_probe_ms",
    },
    "train": {
        "precision", "precision_probe_ms", "bootstrap_seconds", "bootstrap_valid_accuracy",
        "baseline_valid_accuracy", "baseline_train_examples_per_s", "rounds",
    },
    "adapt": {
        "scenario", "feedback_fraction", "feedback_delay_s", "label_noise",
        "post_shift_acc_streamtune", "post_shift_acc_static", "post_shift_acc_river",
        "post_shift_acc_river_best_hindsight", "post_shift_acc_scheduled", "post_shift_acc_oracle",
        "first_300_new_domain_acc_streamtune", "first_300_new_domain_acc_river",
        "first_300_new_domain_acc_scheduled", "events_to_recover", "anchor_loss_max_points",
        "anchor_below_bootstrap_max_points",
    },
    "alerts": {
        "baseline_tuned_alert_precision", "baseline_tuned_alert_recall",
        "baseline_tuned_share", "baseline_tuned_window",
    },
}  # fmt: skip

#: Table keys a benchmark may legitimately lack (none now).
PENDING: set[tuple[str, str]] = set()


def test_every_benchmark_has_tiny_options():
    assert set(BENCHES) <= set(TINY), f"add tiny options for {set(BENCHES) - set(TINY)}"


#: These train at least one adapter even at their smallest: minutes on 2 busy cores.
LONG = {"train", "adapt", "poison"}
#: These start from the bootstrap adapter: on an empty cache the first of them builds it
#: (once per cache, about 11 minutes on 2 cores), hence their longer bound.
BOOTSTRAPPED = {"train", "adapt", "alerts"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in LONG else []) for n in BENCHES]
)
@pytest.mark.timeout(2000)
def test_benchmark_runs_at_a_tiny_size(name, kafka_settings):
    connection = ("--bootstrap-servers", kafka_settings.bootstrap_servers)
    bound = 1900 if name in BOOTSTRAPPED else 840
    lines = run_one(name, (*TINY.get(name, ()), *connection), timeout_s=bound)
    table_keys = {
        key
        for row in ROWS
        if row.bench == name
        for key in (row.value, row.baseline, row.ratio)
        if key is not None and (name, key) not in PENDING
    }
    for figures in lines:  # one line, or one per scenario
        assert figures["bench"] == name
        missing = (table_keys | REQUIRED.get(name, set())) - set(figures)
        assert not missing, f"bench {name} no longer reports {sorted(missing)}"
        wrong = problems(name, figures)
        assert not wrong, f"bench {name}: {wrong} in {figures}"
    if name == "adapt":  # one line per feedback plan, each with its own labels
        assert sorted((f["feedback_fraction"], f["label_noise"]) for f in lines) == [
            (0.3, 0.05),
            (1.0, 0.0),
        ]
        for f in lines:
            assert isinstance(f["events_to_recover"], int)
            assert 0.0 <= f["post_shift_acc_oracle"] <= 1.0
