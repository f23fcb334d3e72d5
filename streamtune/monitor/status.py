"""``streamtune status``: a terminal snapshot of the pipeline, read from the topics.

>>> from streamtune.monitor.state import MonitorState
>>> print(describe(MonitorState().snapshot()))
live adapters: none published (every task serves its seed, 'base')
lag: no consumer group has committed yet
last drift event: none
jobs in flight: none
recent alerts: none
"""

from __future__ import annotations

import time
from typing import Any


def _ago(ts_ms: int) -> str:
    seconds = max(0.0, time.time() - ts_ms / 1000)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def describe(snap: dict[str, Any], alerts: int = 5) -> str:
    """A few lines: live adapter per task, lag per group, last drift, jobs, recent alerts."""
    lines = []
    tasks = sorted(set(snap["live"]) | set(snap["tasks"]))
    if tasks:
        lines.append("live adapters:")
        for task in tasks:
            t = snap["tasks"].get(task, {})
            version = snap["live"].get(task, "base (no adapter published)")
            extra = ""
            if t.get("accuracy_now") is not None or t.get("estimated_now") is not None:
                extra = (
                    f"  (accuracy {_pct(t.get('accuracy_now'))}, "
                    f"estimated {_pct(t.get('estimated_now'))})"
                )
            lines.append(f"  {task:<20} {version}{extra}")
    else:
        lines.append("live adapters: none published (every task serves its seed, 'base')")
    if snap["lag"]:
        lines.append("lag:")
        lines += [f"  {group:<36} {lag}" for group, lag in sorted(snap["lag"].items())]
    else:
        lines.append("lag: no consumer group has committed yet")
    if snap["drift"]:
        d = snap["drift"][-1]
        lines.append(
            f"last drift event: {d['task']} {d['detector']} on {d['statistic']} = {d['value']} "
            f"({_ago(d['ts_ms'])}; {len(snap['drift'])} in all)"
        )
    else:
        lines.append("last drift event: none")
    flying = [j for j in snap["jobs"] if j.get("state") in ("queued", "started", "progress")]
    if flying:
        lines.append("jobs in flight:")
        lines += [
            f"  {j['job_id']} ({', '.join(j['tasks'])}, {j['reason']}): {j['state']} "
            f"{100 * (j.get('progress') or 0):.0f}% {j.get('message', '')}"
            for j in flying
        ]
    else:
        lines.append("jobs in flight: none")
    recent = snap["alerts"][-alerts:]
    if recent:
        lines.append("recent alerts:")
        lines += [
            f"  {_ago(a['ts_ms']):>8}  {a['entity']:<10} {a['kind']}: {a['message']}"
            for a in reversed(recent)
        ]
    else:
        lines.append("recent alerts: none")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"
