"""``streamtune report RUN``: a folder that tells what a run left on its topics.

It holds ``summary.md``, PNG plots (matplotlib, Agg) and, beside each PNG, the JSON of the
figure as a Plotly figure (``data`` and ``layout``), so the numbers behind every plot can
be read or redrawn. Time is in seconds since the run's first record.

>>> import tempfile
>>> from streamtune.monitor.state import MonitorState
>>> out = write_report(MonitorState().snapshot(), Path(tempfile.mkdtemp()), "empty run")
>>> sorted(p.name for p in out.iterdir())[:3]
['accuracy.json', 'accuracy.png', 'cbpe.json']
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt

from streamtune.core.settings import Settings

_MARKERS = {
    "drift": ("#c0392b", ":"),
    "promotion": ("#1a8f4c", "-"),
    "alert": ("#e67e22", "--"),
}


def _origin(snap: dict[str, Any]) -> int:
    starts = [t for t in snap["throughput"]["t"][:1]]
    for task in snap["tasks"].values():
        starts += task["series"]["t"][:1] + task["estimate_series"]["t"][:1]
    return min(starts) if starts else 0


def _secs(values: list[int], origin: int) -> list[float]:
    return [round((v - origin) / 1000, 3) for v in values]


def figures(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Plotly-style figures (``data``, ``layout``, plus ``markers``) from a snapshot."""
    o = _origin(snap)
    markers = (
        [{"kind": "drift", "x": (d["ts_ms"] - o) / 1000, "label": d["task"]} for d in snap["drift"]]
        + [
            {"kind": "promotion", "x": (e["ts_ms"] - o) / 1000, "label": e["version"]}
            for e in snap["timeline"]
            if e["kind"] in ("promoted", "rolled_back")
        ]
        + [
            {"kind": "alert", "x": (a["ts_ms"] - o) / 1000, "label": a["entity"]}
            for a in snap["alerts"]
        ]
    )
    accuracy, cbpe = [], []
    for task, t in snap["tasks"].items():
        accuracy += [
            {
                "name": f"{task} accuracy",
                "x": _secs(t["series"]["t"], o),
                "y": t["series"]["accuracy"],
            },
            {
                "name": f"{task} macro-F1",
                "x": _secs(t["series"]["t"], o),
                "y": t["series"]["macro_f1"],
            },
            {
                "name": f"{task} estimated (CBPE)",
                "x": _secs(t["estimate_series"]["t"], o),
                "y": t["estimate_series"]["estimated"],
            },
        ]
        cbpe += [
            {
                "name": f"{task} estimated",
                "x": _secs(t["cbpe"]["t"], o),
                "y": t["cbpe"]["estimated"],
            },
            {"name": f"{task} realised", "x": _secs(t["cbpe"]["t"], o), "y": t["cbpe"]["realised"]},
        ]
    tp, lat = snap["throughput"], snap["latency"]
    axis = {"xaxis": {"title": "seconds since the first record"}}
    window = f"rolling, last {snap['window']} answers with feedback"
    return {
        "accuracy": {
            "data": accuracy,
            "layout": {
                "title": f"Prequential accuracy ({window})",
                **axis,
                "yaxis": {"range": [0, 1]},
            },
            "markers": markers,
        },
        "cbpe": {
            "data": cbpe,
            "layout": {"title": "Estimated (CBPE) vs realised accuracy per block", **axis},
            "markers": [],
        },
        "throughput": {
            "data": [
                {"name": "predictions/s", "x": _secs(tp["t"], o), "y": tp["predictions_per_s"]},
                {"name": "interactions/s", "x": _secs(tp["t"], o), "y": tp["interactions_per_s"]},
            ],
            "layout": {"title": "Throughput (events per second)", **axis},
            "markers": markers,
        },
        "latency": {
            "data": [
                {"name": "p50 ms", "x": _secs(lat["t"], o), "y": lat["p50_ms"]},
                {"name": "p95 ms", "x": _secs(lat["t"], o), "y": lat["p95_ms"]},
            ],
            "layout": {"title": "Latency, interaction to prediction (ms)", **axis},
            "markers": markers,
        },
    }


def _plot(fig: dict[str, Any], path: Path) -> None:
    f, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
    for trace in fig["data"]:
        pairs = [(x, y) for x, y in zip(trace["x"], trace["y"], strict=True) if y is not None]
        if pairs:
            style = "--" if "estimated" in trace["name"] else ":" if "F1" in trace["name"] else "-"
            ax.plot(
                [p[0] for p in pairs], [p[1] for p in pairs], style, label=trace["name"], lw=1.6
            )
    seen = set()
    for m in fig["markers"]:
        color, dash = _MARKERS[m["kind"]]
        ax.axvline(
            m["x"],
            color=color,
            ls=dash,
            lw=1.1,
            alpha=0.8,
            label=None if m["kind"] in seen else m["kind"],
        )
        seen.add(m["kind"])
    layout = fig["layout"]
    ax.set_title(layout["title"])
    ax.set_xlabel(layout["xaxis"]["title"])
    if "yaxis" in layout and "range" in layout["yaxis"]:
        ax.set_ylim(*layout["yaxis"]["range"])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8, ncol=3)
    f.tight_layout()
    f.savefig(path)
    plt.close(f)


def summary(snap: dict[str, Any], title: str) -> str:
    """The Markdown summary of a snapshot."""
    c = snap["counts"]
    lines = [
        f"# streamtune run report: {title}",
        "",
        f"- interactions {c.get('interactions', 0)}, predictions {c.get('predictions', 0)}, "
        f"feedback {c.get('feedback', 0)}, labelled {c.get('labelled', 0)}",
        f"- dead letters: {snap['dead_letters'] or 'none'}",
        f"- drift events {len(snap['drift'])}, train jobs {len(snap['jobs'])}, "
        f"alerts {len(snap['alerts'])}",
        f"- live adapters: {', '.join(f'{k}={v}' for k, v in snap['live'].items()) or 'base'}",
        "",
        "## Accuracy per task",
        "",
        "| task | predictions | labelled | accuracy (last window) | macro-F1 | CBPE estimate | "
        "CBPE error (mean abs, blocks) | uncalibrated error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, t in snap["tasks"].items():
        cb = t["cbpe"]
        lines.append(
            f"| {task} | {t['predictions']} | {t['labelled']} | {_pct(t['accuracy_now'])} | "
            f"{t['macro_f1_now'] if t['macro_f1_now'] is not None else '-'} | "
            f"{_pct(t['estimated_now'])} | {_pct(cb['mae'])} ({cb['blocks']}) | {_pct(cb['raw_mae'])} |"
        )
    lines += ["", "## Adapter timeline", ""]
    lines += [
        f"- {e['ts_ms']}: {e['task']} {e['version']} **{e['kind']}** {e['detail']}"
        for e in snap["timeline"]
    ] or ["- no adapter events"]
    lines += ["", "## Drift events", ""]
    lines += [
        f"- {d['ts_ms']}: {d['task']} {d['detector']} on {d['statistic']} = {d['value']} "
        f"(position {d['position']}"
        + (
            ""
            if d.get("examples_since_change") is None
            else f", began {d['examples_since_change']} examples ago"
        )
        + ")"
        for d in snap["drift"]
    ] or ["- none"]
    lines += ["", "## Train jobs", ""]
    lines += [
        f"- {j['job_id']} ({', '.join(j['tasks'])}, {j['reason']}): {j.get('state')} "
        f"{j.get('message', '')}"
        for j in snap["jobs"]
    ] or ["- none"]
    lines += ["", "## Alerts", ""]
    lines += [
        f"- {a['ts_ms']}: {a['entity']} {a['kind']}: {a['message']}" for a in snap["alerts"]
    ] or ["- none"]
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({name}.png)" for name in ("accuracy", "cbpe", "throughput", "latency")]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write_report(snap: dict[str, Any], out: Path, title: str) -> Path:
    """Write ``summary.md``, ``NAME.png`` and ``NAME.json`` for every figure into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures(snap).items():
        (out / f"{name}.json").write_text(json.dumps(fig, indent=1), "utf-8")
        _plot(fig, out / f"{name}.png")
    (out / "summary.md").write_text(summary(snap, title), "utf-8")
    (out / "snapshot.json").write_text(json.dumps(snap), "utf-8")
    return out


def write_run_report(settings: Settings, out: Path | None = None) -> Path:
    """Read what the run under ``settings.topic_prefix`` left on its topics; write its report
    into ``out`` (default ``<cache_dir>/reports/<prefix>``)."""
    from streamtune.monitor.feed import read_state

    state = asyncio.run(read_state(settings))
    name = settings.topic_prefix.rstrip("-") or "run"
    return write_report(state.snapshot(), out or settings.cache_dir / "reports" / name, name)
