"""Reading replay files: the shared data sets as they are, and bad rows with line numbers."""

from __future__ import annotations

import pytest

from streamtune.core.errors import ConfigError
from streamtune.replay import BadRow, ReplayRow, parse_label_map, read_rows
from tests.conftest import DATA


def good(rows):
    return [r for r in rows if isinstance(r, ReplayRow)]


def test_tfns_reads_every_row():
    rows = list(read_rows(DATA / "tfns" / "valid.csv", "tfns-sentiment"))
    assert len(rows) == 2388 and all(isinstance(r, ReplayRow) for r in rows)
    assert {r.label for r in rows} == {0, 1, 2}


def test_banking77_label_names_map_to_indices():
    rows = good(read_rows(DATA / "banking77" / "test.csv", "banking77-intent"))
    assert len(rows) == 3080
    assert rows[0].label == 0  # card_arrival is the first category


def test_surge_stock_with_label_map_and_ticker_column():
    rows = list(
        read_rows(
            DATA / "surge_stock" / "sentiment.csv",
            "tfns-sentiment",
            label_map=parse_label_map("Positive=Bullish,Negative=Bearish"),
        )
    )
    assert len(rows) == 500 and all(isinstance(r, ReplayRow) for r in rows)
    assert {r.label for r in rows} == {0, 1}
    assert all(r.entity and r.entity.startswith("$") for r in rows)


def test_unmapped_foreign_labels_are_bad_rows_not_a_crash():
    rows = list(read_rows(DATA / "surge_crypto" / "sentiment.csv", "tfns-sentiment", limit=5))
    # Exactly the 5 rows asked for, each reported: an empty list would make all() pass.
    assert len(rows) == 5
    assert all(isinstance(r, BadRow) and "not a label of task" in r.reason for r in rows)
    lines = [r.line for r in rows]  # physical lines: a quoted comment may span several
    assert lines[0] == 2 and lines == sorted(set(lines))


def test_bad_csv_rows_carry_their_line_numbers(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(
        "text,label\n"
        "fine tweet,1\n"
        "unknown label,Sideways\n"
        '"multi\nline tweet",2\n'
        "too,many,fields\n"
        "out of range,9\n"
        "last,0\n",
        encoding="utf-8",
    )
    rows = list(read_rows(path, "tfns-sentiment"))
    assert [type(r).__name__ for r in rows] == [
        "ReplayRow",
        "BadRow",
        "ReplayRow",
        "BadRow",
        "BadRow",
        "ReplayRow",
    ]
    assert [r.line for r in rows] == [2, 3, 4, 6, 7, 8]
    assert "Sideways" in rows[1].reason and "out of range" in rows[4].reason


def test_jsonl_with_a_broken_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{broken\n[1]\n{"text": "b", "label": "Neutral"}\n')
    rows = list(read_rows(path, "tfns-sentiment"))
    assert [(type(r).__name__, r.line) for r in rows] == [
        ("ReplayRow", 1), ("BadRow", 2), ("BadRow", 3), ("ReplayRow", 4),
    ]  # fmt: skip
    assert rows[3].label == 2


def test_missing_file_and_missing_column_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        list(read_rows(tmp_path / "nope.csv", "tfns-sentiment"))
    path = tmp_path / "cols.csv"
    path.write_text("body,label\nx,1\n")
    with pytest.raises(ConfigError, match="--text-column"):
        list(read_rows(path, "tfns-sentiment"))
    assert good(read_rows(path, "tfns-sentiment", text_column="body"))[0].text == "x"


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        list(read_rows(path, "tfns-sentiment"))


def test_label_map_syntax_error():
    with pytest.raises(ConfigError, match="FROM=TO"):
        parse_label_map("Positive")
