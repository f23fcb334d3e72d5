"""One results file for every benchmark, and the docs' table rendered from it.

``make bench`` runs ``python -m streamtune.bench.results run``: every benchmark the CLI knows
(``streamtune.cli.bench.BENCHES``, in that order), each in its own process through the real
entry point (``streamtune bench NAME --json``), one at a time. Each JSON line is printed as it
arrives; all of them go to ``bench/results.json`` with the git commit and the machine's facts;
then the block between the markers in docs/benchmarks.md is replaced by a table rendered from that file
(``python -m streamtune.bench.results render`` does only this last step; the docs site's build
renders it again, through ``docs/hooks.py``). No figure in the table comes from anywhere else.

``python -m streamtune.bench.results run NAME ...`` measures only the named benchmarks again
and replaces their figures in an existing ``bench/results.json``, keeping the others. The
file then records each such rerun (commit, time, load average), and the table's header names
it, so that no figure is passed off as part of a run it was not measured in.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results.json"
PAGE = REPO / "docs" / "benchmarks.md"
BEGIN = "<!-- bench-table:begin (rendered from bench/results.json by `make bench`) -->"
END = "<!-- bench-table:end -->"

Figures = dict[str, Any]


def run_one(name: str, options: Sequence[str] = (), timeout_s: float = 3600) -> list[Figures]:
    """Run ``streamtune bench NAME --json OPTIONS`` in a child process; its JSON lines (one,
    or one per scenario for a benchmark that runs several).

    Raises ``RuntimeError`` with the child's stderr tail when it fails or prints no JSON."""
    command = [sys.executable, "-m", "streamtune.cli", "bench", name, "--json", *options]
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        command, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=REPO
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"`streamtune bench {name}` failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return [orjson.loads(line) for line in lines]


def git_commit() -> str:
    """The checkout's commit, with ``-dirty`` when it has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - fixed arguments
            ["git", *args],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        ).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine_facts() -> dict[str, object]:
    """CPU model, cores, torch version and the device serve would use."""
    import torch

    from models.device import resolve_device
    from streamtune.core.settings import Settings

    cpu = platform.processor() or platform.machine()
    with_info = Path("/proc/cpuinfo")
    if with_info.exists():
        for line in with_info.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    device = resolve_device(Settings())
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "device": name,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other work on the machine slows every figure; this says how busy it was.
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def run_all(names: Sequence[str]) -> tuple[dict[str, object], list[str]]:
    """Every named benchmark in turn; (the results document, names that failed)."""
    machine = machine_facts()
    results: dict[str, Figures | list[Figures]] = {}
    failed = []
    for name in names:
        print(f"# streamtune bench {name} --json", file=sys.stderr, flush=True)
        try:
            lines = run_one(name)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(exc, file=sys.stderr, flush=True)
            failed.append(name)
            lines = [{"bench": name, "error": str(exc)[-500:]}]
        for figures in lines:
            print(orjson.dumps(figures).decode(), flush=True)
        results[name] = lines[0] if len(lines) == 1 else lines
    document = {
        "commit": git_commit(),
        "finished_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "results": results,
    }
    return document, failed


def merge_rerun(previous: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    """``previous`` with the benchmarks of ``rerun`` replaced, and each recorded as a rerun.

    >>> old = {"commit": "a", "finished_utc": "t0", "machine": {}, "results": {"x": 1, "y": 2}}
    >>> new = {"commit": "b", "finished_utc": "t1", "machine": {"load_average_1m_at_start": 0.1},
    ...        "results": {"y": 3}}
    >>> merged = merge_rerun(old, new)
    >>> merged["results"], merged["reruns"]["y"]["commit"], merged["commit"]
    ({'x': 1, 'y': 3}, 'b', 'a')
    """
    merged = {**previous, "results": {**previous["results"], **rerun["results"]}}
    reruns = dict(previous.get("reruns", {}))
    for name in rerun["results"]:
        reruns[name] = {
            "commit": rerun["commit"],
            "finished_utc": rerun["finished_utc"],
            "load_average_1m_at_start": rerun["machine"].get("load_average_1m_at_start"),
        }
    merged["reruns"] = reruns
    return merged


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table: a figure, its same-run baseline, and its target."""

    bench: str
    what: str
    value: str
    baseline: str | None = None
    ratio: str | None = None
    target: str = ""
    met: Callable[[Figures], bool] | None = None


ROWS: tuple[Row, ...] = (
    Row("replay", "rows/s published, vs bare aiokafka", "replay_rows_per_s",
        "raw_aiokafka_rows_per_s", "ratio_vs_raw"),
    Row("client", "interactions/s from the producer client (validated, acknowledged), vs bare "
        "aiokafka sending the same serialised records", "client_rows_per_s",
        "raw_aiokafka_rows_per_s", "ratio_vs_raw"),
    Row("stream", "events/s through the worker, vs plain aiokafka doing the same work",
        "faust_events_per_s", "raw_aiokafka_events_per_s", "ratio", "ratio >= 0.5",
        lambda f: f["ratio"] >= 0.5),
    Row("drift", "false alarms per 10k stationary events, vs default ADWIN",
        "false_alarms_per_10k", "adwin_default_false_alarms_per_10k", None, "<= 1",
        lambda f: f["false_alarms_per_10k"] <= 1.0),
    Row("drift", "events from shift to alarm (feedback delay included), vs default ADWIN",
        "detection_delay", "adwin_default_detection_delay", None, "<= ADWIN",
        lambda f: f["detection_delay"] <= f["adwin_default_detection_delay"]),
    Row("inference", "serve fp32 texts/s, vs HF pipeline fp32 at its best batch",
        "serve_fp32_texts_per_s", "hf_pipeline_fp32_best_texts_per_s",
        "ratio_fp32_vs_pipeline_fp32", "ratio >= 1.5",
        lambda f: f["ratio_fp32_vs_pipeline_fp32"] >= 1.5),
    Row("inference", "serve texts/s as configured, vs HF pipeline bf16 (same batch)",
        "serve_texts_per_s", "hf_pipeline_bf16_texts_per_s", "ratio_vs_pipeline_bf16"),
    Row("inference", "serve texts/s as configured, vs the FLOP bound of its device",
        "serve_texts_per_s", "flop_bound_texts_per_s", "ratio_vs_flop_bound",
        "ratio >= 0.5 on CPU",
        lambda f: not str(f["device"]).startswith("cpu") or f["ratio_vs_flop_bound"] >= 0.5),
    Row("inference", "accuracy as configured, vs fp32 serve (delta in points)", "accuracy",
        "fp32_accuracy", "accuracy_delta_vs_fp32_points"),
    Row("inference", "p99 latency ms to the broker's ack, half-throughput load", "p99_ms"),
    Row("swap", "ms from publish to first answer with the new version (worst swap)",
        "publish_to_live_ms", None, None, "<= 1000",
        lambda f: f["publish_to_live_ms"] <= 1000 and f["never_live"] == 0),
    Row("swap", "p99 latency ms during swaps, vs without swaps", "p99_ms_during_swaps",
        "p99_ms_baseline", "p99_ratio_during_swaps", "ratio <= 1.5",
        lambda f: f["p99_ratio_during_swaps"] <= 1.5),
    Row("swap", "longest ms without an answer during swaps, vs without swaps", "max_gap_ms",
        "max_gap_ms_baseline"),
    Row("swap", "interactions lost", "lost", None, None, "0", lambda f: f["lost"] == 0),
    Row("swap", "interactions answered twice", "duplicated", None, None, "0",
        lambda f: f["duplicated"] == 0),
    Row("train", "TFNS valid accuracy of the bootstrap adapter, vs the seed model",
        "bootstrap_valid_accuracy", "base_valid_accuracy", "bootstrap_gain_vs_base_points",
        ">= 0.87", lambda f: f["bootstrap_valid_accuracy"] >= 0.87),
    Row("train", "TFNS valid accuracy of an online job's LoRA (top layers), vs the seed model",
        "valid_accuracy", "base_valid_accuracy", "accuracy_gain_vs_base_points"),
    Row("train", "training examples/s, vs the previous training defaults",
        "train_examples_per_s", "baseline_train_examples_per_s", "speedup_vs_baseline",
        "ratio >= 2", lambda f: f["speedup_vs_baseline"] >= 2),
    Row("adapt", "post-shift prequential accuracy, vs the static model",
        "post_shift_acc_streamtune", "post_shift_acc_static", None, ">= +0.15",
        lambda f: f["post_shift_acc_streamtune"] >= f["post_shift_acc_static"] + 0.15),
    Row("adapt", "post-shift prequential accuracy, vs an oracle (the job's recipe retrained "
        "every 100 labels on every label in time, no gate, no latency)",
        "post_shift_acc_streamtune", "post_shift_acc_oracle", None, ">= oracle - 0.03",
        lambda f: f["post_shift_acc_streamtune"] >= f["post_shift_acc_oracle"] - 0.03),
    Row("adapt", "post-shift prequential accuracy, vs River's best configuration in hindsight",
        "post_shift_acc_streamtune", "post_shift_acc_river_best_hindsight", None,
        ">= +0.05 (full), +0.03 (partial)",
        lambda f: f["post_shift_acc_streamtune"] >= f["post_shift_acc_river_best_hindsight"]
        + (0.05 if f.get("feedback_fraction", 1.0) >= 1.0 else 0.03)),
    Row("adapt", "post-shift prequential accuracy, vs River picked before the shift",
        "post_shift_acc_streamtune", "post_shift_acc_river"),
    Row("adapt", "post-shift prequential accuracy, vs retraining on a schedule",
        "post_shift_acc_streamtune", "post_shift_acc_scheduled", None, ">= +0.03",
        lambda f: f["post_shift_acc_streamtune"] >= f["post_shift_acc_scheduled"] + 0.03),
    Row("adapt", "accuracy over the first 300 events of the new domain, vs River",
        "first_300_new_domain_acc_streamtune", "first_300_new_domain_acc_river", None, "higher",
        lambda f: f["first_300_new_domain_acc_streamtune"] > f["first_300_new_domain_acc_river"]),
    Row("adapt", "accuracy over the first 300 events of the new domain, vs scheduled retraining",
        "first_300_new_domain_acc_streamtune", "first_300_new_domain_acc_scheduled", None,
        "higher", lambda f: f["first_300_new_domain_acc_streamtune"]
        > f["first_300_new_domain_acc_scheduled"]),
    Row("adapt", "accuracy over the first 300 post-shift events, vs an ideal fast path "
        "(a head refitted every 10 events on every label in time, no gate, no latency)",
        "first_300_acc_streamtune", "first_300_acc_ideal_head"),
    Row("adapt", "largest anchor-accuracy fall at one promotion, points", "anchor_loss_max_points",
        None, None, "<= 1", lambda f: f["anchor_loss_max_points"] <= 1),
    Row("adapt", "largest fall below the start adapter on the anchor set, points",
        "anchor_below_bootstrap_max_points", None, None, "<= 2",
        lambda f: f["anchor_below_bootstrap_max_points"] <= 2),
    Row("adapt", "labelled events after the shift until within 2 points of pre-shift accuracy",
        "events_to_recover"),
    Row("adapt", "seconds from the first drift event to the first adapted answer",
        "seconds_drift_to_adapted_answer", None, None, "<= 20",
        lambda f: (f["seconds_drift_to_adapted_answer"] or 1e9) <= 20),
    Row("alerts", "alert precision on injected bursts, vs a fixed-threshold rule tuned on seeds 11-14",
        "alert_precision", "baseline_tuned_alert_precision", None, ">= 0.9",
        lambda f: (f["alert_precision"] or 0) >= 0.9),
    Row("alerts", "alert recall on injected bursts, vs a fixed-threshold rule tuned on seeds 11-14",
        "alert_recall", "baseline_tuned_alert_recall", None, ">= 0.9",
        lambda f: f["alert_recall"] >= 0.9),
    Row("alerts", "false alerts per 10k steady events, vs the tuned fixed-threshold rule",
        "false_alerts_per_10k_events", "baseline_tuned_false_alerts_per_10k_events", None, "<= 1",
        lambda f: f["false_alerts_per_10k_events"] <= 1),
    Row("alerts", "median sightings from a burst's start to its alert, vs the tuned rule",
        "median_detection_delay_events", "baseline_tuned_median_detection_delay_events"),
    Row("poison", "accuracy with a source flipping 30% of labels, vs all sources clean",
        "defended_accuracy", "clean_accuracy", "defended_loss_points",
        "loss <= 1 point", lambda f: f["defended_loss_points"] <= 1),
    Row("poison", "the same without the trust filter, vs all sources clean",
        "undefended_accuracy", "clean_accuracy", "undefended_loss_points"),
)  # fmt: skip


def _cell(figures: Figures, key: str | None) -> str:
    """A figure as the table shows it.

    >>> _cell({"a": 1.5, "b": None}, "a"), _cell({"b": None}, "b"), _cell({}, "c")
    ('1.5', '—', '—')
    """
    if key is None or figures.get(key) is None:
        return "—"
    return str(figures[key])


def _verdict(row: Row, figures: Figures) -> str:
    if row.met is None:
        return row.target or ""
    try:
        return f"{row.target}: {'met' if row.met(figures) else '**not met**'}"
    except (KeyError, TypeError):
        return f"{row.target}: —"


def render_table(document: dict[str, Any]) -> str:
    """The benchmark table of docs/benchmarks.md, from a results document.

    >>> doc = {"commit": "abc", "finished_utc": "today", "machine": {"cpu_model": "X",
    ...        "cpu_cores": 2, "torch": "2", "device": "cpu"},
    ...        "results": {"swap": {"lost": 0, "duplicated": 0}, "new": {"figure": 3}}}
    >>> print(render_table(doc).splitlines()[-2])
    | swap | interactions answered twice | 0 | — | — | 0: met |
    >>> print(render_table(doc).splitlines()[-1])
    | new | see `bench/results.json` | — | — | — |  |
    """
    machine = document["machine"]
    results: dict[str, Figures | list[Figures]] = document["results"]
    lines = [
        f"Measured by `make bench` at commit `{document['commit'][:12]}`, "
        f"{document['finished_utc']}, on {machine['cpu_model']} ({machine['cpu_cores']} cores), "
        f"torch {machine['torch']}, device `{machine['device']}`"
        + (
            f", 1-minute load average {machine['load_average_1m_at_start']} at the start."
            if "load_average_1m_at_start" in machine
            else "."
        ),
    ]
    for name, rerun in document.get("reruns", {}).items():
        lines.append(
            f"`{name}` was measured again alone (`python -m streamtune.bench.results run {name}`) "
            f"at commit `{rerun['commit'][:12]}`, {rerun['finished_utc']}, 1-minute load average "
            f"{rerun['load_average_1m_at_start']} at the start; its rows below are from that run."
        )
    lines += [
        "",
        "| bench | figure | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for figures in result if isinstance(result, list) else [result]:
            label = (
                f"{name} ({', '.join(str(figures[k]) for k in ('scenario', 'feedback') if k in figures)})"
                if "scenario" in figures
                else name
            )
            lines.extend(_rows_of(name, label, figures))
    return "\n".join(lines)


def _rows_of(name: str, label: str, figures: Figures) -> list[str]:
    if "error" in figures:
        return [f"| {label} | **failed** (see `bench/results.json`) | — | — | — |  |"]
    rows = [row for row in ROWS if row.bench == name]
    if not rows:  # a benchmark added later and not described here yet
        return [f"| {label} | see `bench/results.json` | — | — | — |  |"]
    return [
        f"| {label} | {row.what} | {_cell(figures, row.value)} | {_cell(figures, row.baseline)} "
        f"| {_cell(figures, row.ratio)} | {_verdict(row, figures)} |"
        for row in rows
    ]


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the table markers replaced by ``block``.

    >>> replace_block(f"a\\n{BEGIN}\\nold\\n{END}\\nb", "new").splitlines()[1:4]
    ['<!-- bench-table:begin (rendered from bench/results.json by `make bench`) -->', 'new', \
'<!-- bench-table:end -->']
    """
    head, found, rest = text.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"no {BEGIN!r} ... {END!r} block")
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def render(results: Path = RESULTS, page: Path = PAGE) -> None:
    """Replace the benchmark table of ``page`` with one rendered from ``results``."""
    document = orjson.loads(results.read_bytes())
    page.write_text(replace_block(page.read_text(), render_table(document)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamtune.bench.results")
    parser.add_argument("action", choices=("run", "render"))
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    if args.action == "render":
        render()
        return 0
    from streamtune.cli.bench import BENCHES

    document, failed = run_all(args.names or list(BENCHES))
    if args.names and RESULTS.exists():
        document = merge_rerun(orjson.loads(RESULTS.read_bytes()), document)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    render()
    print(
        f"# wrote {RESULTS.relative_to(REPO)} and the table in {PAGE.relative_to(REPO)}",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
