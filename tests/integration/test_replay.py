"""`streamtune replay` against the real broker: exact counts, keys, delayed feedback, bad rows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from schemas import Feedback, Interaction
from schemas.topics import FEEDBACK, INTERACTIONS
from tests.conftest import DATA
from tests.kafka_helpers import read_all

pytestmark = pytest.mark.integration


def run_cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "streamtune.cli", "replay", *args,
        "--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_replay_publishes_every_good_row_and_reports_bad_ones(topics, tmp_path):
    import asyncio

    settings = topics
    path = tmp_path / "mixed.csv"
    good_lines = DATA.joinpath("tfns", "valid.csv").read_text().splitlines()[1:41]
    bad = ["not json at all but a tweet,Sideways", "x" * 5000 + ",1", "   ,2", "too,many,fields,3"]
    path.write_text("text,label\n" + "\n".join(good_lines[:20] + bad + good_lines[20:]) + "\n")

    proc = run_cli(
        settings, str(path), "--rate", "0", "--feedback-fraction", "1.0", "--feedback-delay", "0.3",
        "--id-prefix", "mix", "--seed", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "published 40 interactions and 40 feedback records" in proc.stdout
    assert "skipped 4 bad rows" in proc.stdout
    for line_no in (22, 23, 24, 25):
        assert f"mixed.csv:{line_no}: skipped" in proc.stderr
    assert "at most 4096 characters" in proc.stderr

    interactions = asyncio.run(read_all(settings, settings.topic(INTERACTIONS), expect=40))
    feedback = asyncio.run(read_all(settings, settings.topic(FEEDBACK), expect=40))
    itx = {r.key.decode(): Interaction.from_bytes(r.value) for r in interactions}
    fbs = {r.key.decode(): Feedback.from_bytes(r.value) for r in feedback}
    assert len(interactions) == len(itx) == 40 and len(feedback) == len(fbs) == 40
    assert set(itx) == set(fbs) == {f"mix-{n}" for n in [*range(2, 22), *range(26, 46)]}
    expected_labels = {f"mix-{n}": int(line.rsplit(",", 1)[1]) for n, line in zip(
        [*range(2, 22), *range(26, 46)], good_lines, strict=True)}  # fmt: skip
    assert {k: f.label for k, f in fbs.items()} == expected_labels
    # Feedback waits for its delay, and keys co-partition with the interaction.
    for key, fb in fbs.items():
        assert fb.ts_ms - itx[key].ts_ms >= 250
    partition_of = {r.key: r.partition for r in interactions}
    assert all(partition_of[r.key] == r.partition for r in feedback)


def test_replay_feedback_fraction_is_seeded(topics):
    """The same --seed picks the same rows for feedback; another seed picks others."""
    import asyncio

    settings = topics

    def replay_with(seed: str, prefix: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            settings, str(DATA / "surge_stock" / "sentiment.csv"), "--rate", "0", "--limit", "200",
            "--feedback-fraction", "0.25", "--seed", seed, "--id-prefix", prefix,
            "--label-map", "Positive=Bullish,Negative=Bearish",
        )  # fmt: skip

    runs = {
        prefix: replay_with(seed, prefix) for prefix, seed in (("a", "3"), ("b", "3"), ("c", "4"))
    }
    for proc in runs.values():
        assert proc.returncode == 0, proc.stderr
    feedback = asyncio.run(read_all(settings, settings.topic(FEEDBACK)))
    lines: dict[str, set[str]] = {prefix: set() for prefix in runs}
    for record in feedback:
        prefix, _, line = Feedback.from_bytes(record.value).interaction_id.partition("-")
        lines[prefix].add(line)
    for prefix, proc in runs.items():
        published = f"published 200 interactions and {len(lines[prefix])} feedback records"
        assert published in proc.stdout
        # Binomial(200, 0.25): mean 50, sd 6.1; 25..75 is about 4 sd either side.
        assert 25 <= len(lines[prefix]) <= 75
    assert lines["a"] == lines["b"]  # the same seed reproduces the same sample
    # Another seed: two independent 25% samples of 200 rows coincide with probability ~1e-48.
    assert lines["c"] != lines["a"]
    interactions = asyncio.run(read_all(settings, settings.topic(INTERACTIONS), expect=600))
    assert len(interactions) == 600
    assert all(Interaction.from_bytes(r.value).entity.startswith("$") for r in interactions)


def test_replay_unknown_task_is_a_clear_error(topics):
    proc = run_cli(topics, str(DATA / "tfns" / "valid.csv"), "--task", "astrology")
    assert proc.returncode == 2
    assert "unknown task 'astrology'" in proc.stderr
