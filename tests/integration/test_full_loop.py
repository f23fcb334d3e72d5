"""The full loop, end to end: replay with feedback -> serve -> worker (join, drift, windows,
trigger) -> trainer (fast head, LoRA, gate, sign) -> serve swaps -> adapted answers.

Worker, serve and train run as real processes on the real broker, from the task's bootstrap
adapter, with the default settings. Nothing races the machine's speed: the post-shift stream
keeps flowing until an adapter trained after the drift answers (bounded by the test's own
timeout), then for ``AFTER`` more events, on which the adapted answers are compared with the
starting model's answers to the same events.
"""

from __future__ import annotations

import pytest

from models.bootstrap import evaluate_file
from streamtune.core.settings import Settings
from streamtune.scenario.build import build
from streamtune.scenario.prepare import ensure_signing_key, prepare
from streamtune.scenario.runner import TASK, Run, run_scenario, scenario_settings
from tests.conftest import DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AFTER = 150  # events scored after the first adapted answer
# The starting model calls most surge posts Neutral (about 25-35% right); an adapter fitted
# to them reaches 65-80%. 15 points is well clear of the noise of 150 events (sd ~4 points).
MARGIN = 0.15


@pytest.mark.timeout(2400)  # an empty cache first builds the bootstrap (about 11 minutes)
def test_a_shift_is_answered_by_an_adapted_model_that_beats_the_starting_one(
    topics: Settings, tmp_path
):
    settings = ensure_signing_key(scenario_settings(topics), tmp_path / "keys")
    base, start = prepare(settings, TASK)
    scenario = build(DATA, "abrupt", pre=200)

    def adapted(run: Run) -> bool:
        return run.first_adapted_answer() is not None

    run = run_scenario(
        settings, scenario, tmp_path / "logs", rate=12.0, settle_s=5.0,
        start_version=start.version, stop_when=adapted, then=AFTER,
    )  # fmt: skip

    shift = scenario.shift_at
    rows = scenario.rows[: run.sent]
    answers = [run.answer("adapt", r) for r in rows]
    assert all(a is not None for a in answers), "every interaction is answered"
    assert run.first_drift is not None, "the shift was detected"
    assert {a.adapter_version for a in answers[:shift]} == {start.version}  # type: ignore[union-attr]
    first = run.first_adapted_answer()
    assert first is not None, (
        f"no adapted answer within the post-shift stream ({run.sent - shift} events); jobs: "
        + str([(s.job_id, s.state, s.message) for s in run.statuses if s.state != "progress"])
    )
    at = next(i for i, a in enumerate(answers) if a.interaction_id == first.interaction_id)  # type: ignore[union-attr]
    assert at >= shift
    after = rows[at:]
    assert len(after) >= AFTER - 5  # the replay went on after the swap
    adapted_hits = [a.label == r.label for a, r in zip(answers[at:], after, strict=True)]  # type: ignore[union-attr]
    # Once an adapted version answers, the starting model never answers again.
    assert start.version not in {a.adapter_version for a in answers[at + 20 :]}  # type: ignore[union-attr]
    static = evaluate_file(
        base, start.blob, TASK, [r.text for r in after], [r.label for r in after]
    )
    adapted_acc = sum(adapted_hits) / len(adapted_hits)
    assert adapted_acc >= static + MARGIN, (adapted_acc, static)
