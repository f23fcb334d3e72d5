"""The full loop, end to end and shortened: replay with feedback -> serve -> worker (join,
drift, windows, trigger) -> trainer (LoRA, gate, sign) -> serve swaps -> predictions carry
the new version. Worker, serve and train run as real processes on the real broker."""

from __future__ import annotations

import pytest

from models.signing import generate_keypair
from streamtune.core.settings import Settings
from streamtune.scenario.build import build
from streamtune.scenario.runner import run_scenario, scenario_settings
from tests.conftest import DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_a_shift_leads_to_drift_a_job_a_promoted_adapter_and_new_predictions(
    topics: Settings, tmp_path
):
    key, _ = generate_keypair(tmp_path / "keys" / "trusted" / "trainer")
    settings = scenario_settings(
        topics,
        signing_key_file=key,
        trusted_keys_dir=tmp_path / "keys" / "trusted",
        window_size=60,
        train_min_examples=40,
        train_cooldown_s=2.0,
        train_epochs=2,
        train_max_length=48,
        gate_anchor_size=150,
        gate_anchor_tolerance=0.2,
    )
    scenario = build(DATA, pre=150, post=300)
    run = run_scenario(settings, scenario, tmp_path / "logs", rate=12.0, settle_s=3.0)

    shift = scenario.shift_at
    assert run.sent == len(scenario.rows)
    assert len(run.predictions) == run.sent  # every interaction answered
    error_drifts = [e for e in run.drift_events if e.statistic == "error_rate"]
    assert error_drifts, [e.statistic for e in run.drift_events]
    assert run.jobs >= 1
    assert run.promoted >= 1, [
        (s.state, s.message) for s in run.statuses if s.state in ("rejected", "failed")
    ]
    promoted = {
        v for s in run.statuses if s.state == "finished" for v in s.adapter_versions.values()
    }
    order = [run.predictions[f"adapt-{r.line}"].adapter_version for r in scenario.rows]
    assert set(order[:shift]) <= {"base"} | promoted
    assert promoted & set(order[shift:]), (
        "no prediction after the shift came from a promoted adapter"
    )
    # Once served, a promoted version answers until a newer one replaces it: no going back to base.
    first_new = next(i for i, v in enumerate(order) if v != "base")
    assert "base" not in order[first_new + 30 :]
    hits = run.hits(scenario, "adapt")
    after = [h for h, v in zip(hits[shift:], order[shift:], strict=True) if v != "base"]
    before = [h for h, v in zip(hits[shift:], order[shift:], strict=True) if v == "base"]
    # The adapted model answers the new domain better than the base model did.
    assert sum(after) / len(after) > sum(before) / max(1, len(before))
