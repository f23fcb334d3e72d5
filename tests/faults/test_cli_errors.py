"""The mistakes a new user makes end in one line that names the fix, and exit status 2.

Each case runs the real command line (``python -m streamtune.cli ...``) in a child process,
as a person would, and checks stderr: exactly one line, no traceback, no leaked client.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.faults


def run_cli(
    args: list[str], env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMTUNE_")}
    return subprocess.run(
        [sys.executable, "-m", "streamtune.cli", *args],
        env={**clean, **env}, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The error line, alone on stderr."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Unclosed" not in proc.stderr
    assert lines[0].startswith("streamtune: error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    path.write_text("text,label\n$AAPL beats estimates,1\nshares slide,0\n")
    return str(path)


COMMANDS = {
    "worker status": ["worker", "status"],
    "replay": ["replay", "{rows}"],
    "topics create": ["topics", "create"],
    "adapters list": ["adapters", "list", "tfns-sentiment"],
    "serve": ["serve"],
    "train": ["train"],
    "worker": ["worker"],
    "kafka status": ["kafka", "status"],
}


def command(name: str, rows: str) -> list[str]:
    return [part.format(rows=rows) for part in COMMANDS[name]]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_invalid_setting_names_the_variable(name, rows_file):
    line = one_line(run_cli(command(name, rows_file), {"STREAMTUNE_WINDOW_SIZE": "-1"}))
    assert "STREAMTUNE_WINDOW_SIZE='-1'" in line and "greater than or equal to 0" in line


def test_a_setting_check_across_fields_names_both_variables(rows_file):
    line = one_line(
        run_cli(
            ["worker", "status"],
            {"STREAMTUNE_WINDOW_SIZE": "0", "STREAMTUNE_WINDOW_MAX_AGE_S": "0"},
        )
    )
    assert "STREAMTUNE_WINDOW_SIZE" in line and "STREAMTUNE_WINDOW_MAX_AGE_S" in line


def test_a_secret_is_never_echoed(rows_file):
    proc = run_cli(
        ["worker", "status"],
        {"STREAMTUNE_REQUEST_TIMEOUT_MS": "5", "STREAMTUNE_SASL_PASSWORD": "hunter2"},
    )
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "STREAMTUNE_REQUEST_TIMEOUT_MS" in one_line(proc)


@pytest.mark.parametrize(
    "name",
    ["replay", "worker status", "topics create", "adapters list", "serve", "train", "worker"],
)
def test_an_unreachable_broker_is_one_line(name, rows_file):
    """The services too: they check the broker before they load a model (nothing is logged
    before the line), and the worker ends instead of leaving Faust to retry."""
    proc = run_cli(command(name, rows_file), {"STREAMTUNE_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    line = one_line(proc)
    assert "no Kafka broker answers at 127.0.0.1:1" in line
    assert "streamtune kafka start" in line and "STREAMTUNE_BOOTSTRAP_SERVERS" in line


@pytest.mark.integration
def test_replaying_into_topics_never_created_names_the_fix(broker_bootstrap, rows_file):
    proc = run_cli(
        ["replay", rows_file],
        {"STREAMTUNE_BOOTSTRAP_SERVERS": broker_bootstrap, "STREAMTUNE_TOPIC_PREFIX": "chk-never-"},
        timeout_s=60,
    )
    line = one_line(proc)
    assert "chk-never-interactions" in line and "streamtune topics create" in line
    assert "not found" not in proc.stderr


@pytest.mark.integration
def test_serving_topics_never_created_names_them_before_the_model_loads(broker_bootstrap):
    proc = run_cli(
        ["serve"],
        {"STREAMTUNE_BOOTSTRAP_SERVERS": broker_bootstrap, "STREAMTUNE_TOPIC_PREFIX": "chk-never-"},
        timeout_s=60,
    )
    line = one_line(proc)  # one line: no model was loaded first
    assert "chk-never-interactions" in line and "chk-never-model-updates" in line
    assert "streamtune topics create" in line
