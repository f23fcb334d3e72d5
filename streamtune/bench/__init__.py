"""Benchmarks: each prints one JSON line with ratios against a baseline run side by side."""
