"""bench/results.json: a rerun of one benchmark replaces only its figures and says so."""

from __future__ import annotations

from streamtune.bench.results import merge_rerun, render_table

MACHINE = {"cpu_model": "X", "cpu_cores": 2, "torch": "2", "device": "cpu"}


def test_a_rerun_replaces_its_rows_and_the_header_names_it():
    full = {
        "commit": "aaaaaaaaaaaaaaaa", "finished_utc": "t0", "machine": MACHINE,
        "results": {"swap": {"lost": 3, "duplicated": 0}, "replay": {"ratio_vs_raw": 0.5}},
    }  # fmt: skip
    again = {
        "commit": "bbbbbbbbbbbbbbbb", "finished_utc": "t1",
        "machine": {**MACHINE, "load_average_1m_at_start": 0.2},
        "results": {"swap": {"lost": 0, "duplicated": 0}},
    }  # fmt: skip
    merged = merge_rerun(full, again)
    table = render_table(merged)
    assert "at commit `aaaaaaaaaaaa`, t0" in table.splitlines()[0]
    assert "`swap` was measured again alone" in table and "`bbbbbbbbbbbb`, t1" in table
    assert "| swap | interactions lost | 0 | — | — | 0: met |" in table
    assert merged["results"]["replay"] == {"ratio_vs_raw": 0.5}
    # The full run's document is left as it was: the merge builds a new one.
    assert "reruns" not in full
