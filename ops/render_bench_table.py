"""Re-render the benchmark table of docs/benchmarks.md from bench/results.json (``make bench`` does this too).

Usage: ``.venv/bin/python ops/render_bench_table.py``. The logic lives in
``streamtune.bench.results`` (where its doctests run).
"""

from streamtune.bench.results import render

if __name__ == "__main__":
    render()
