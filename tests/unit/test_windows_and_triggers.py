"""Windows as offset ranges, and the trigger policy, without Kafka."""

from __future__ import annotations

from schemas import TrainJob
from streams.trigger import TriggerConfig, adapter_published, evaluate, job_ended, trigger
from streams.windows import TaskState, WindowConfig, add_example, close_if_old

TASK = "tfns-sentiment"
NOW = 1_700_000_000_000
MIN = 60_000


def fill(
    state: TaskState, cfg: WindowConfig, count: int, start: int = 0, partitions: int = 3
) -> None:
    for i in range(start, start + count):
        add_example(state, cfg, partition=i % partitions, offset=10 + i // partitions, now_ms=NOW)


def job_at(state, cfg, now=NOW):
    return evaluate(state, cfg, now_ms=now, labelled_topic="labelled")


def test_each_offset_is_counted_once():
    cfg = WindowConfig(window_size=100)
    state = TaskState(TASK)
    assert add_example(state, cfg, partition=0, offset=5, now_ms=NOW)
    assert not add_example(state, cfg, partition=0, offset=5, now_ms=NOW)
    assert not add_example(state, cfg, partition=0, offset=4, now_ms=NOW)
    assert add_example(state, cfg, partition=1, offset=4, now_ms=NOW)
    assert state.examples == 2 and state.open.ranges == {0: [5, 6], 1: [4, 5]}


def test_windows_tumble_by_count_and_by_age():
    cfg = WindowConfig(window_size=10, window_max_age_ms=MIN)
    state = TaskState(TASK)
    fill(state, cfg, 25)
    assert [w.count for w in state.closed] == [10, 10] and state.open.count == 5
    assert not close_if_old(state, cfg, NOW + MIN - 1)
    assert close_if_old(state, cfg, NOW + MIN)
    assert [w.count for w in state.closed] == [10, 10, 5] and state.open is None


def test_state_round_trips_as_json():
    import orjson

    cfg = WindowConfig(window_size=10)
    state = TaskState(TASK)
    fill(state, cfg, 15)
    trigger(state, "drift", "tfns-sentiment:error_rate:99")
    again = TaskState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert again.to_dict() == state.to_dict()


def test_a_full_window_emits_exactly_one_job_with_a_disjoint_newest_holdout():
    wcfg = WindowConfig(window_size=100, holdout_fraction=0.2)
    tcfg = TriggerConfig(min_examples=50, cooldown_ms=0, job_timeout_ms=MIN)
    state = TaskState(TASK)
    fill(state, wcfg, 99)
    assert job_at(state, tcfg) is None
    fill(state, wcfg, 1, start=99)
    job = job_at(state, tcfg)
    assert isinstance(job, TrainJob) and job.reason == "window"
    assert (job.train_examples, job.holdout_examples) == (80, 20)
    assert job_at(state, tcfg) is None  # no second job for the same window
    # The holdout is the 20 newest examples: offsets past every training range.
    for held in job.holdout_ranges:
        for train in job.train_ranges:
            assert not held.overlaps(train)
            if held.partition == train.partition:
                assert train.end <= held.start
    TrainJob.from_bytes(job.to_bytes())  # valid on the wire


def test_one_job_in_flight_and_a_drift_replaces_it():
    wcfg = WindowConfig(window_size=10)
    tcfg = TriggerConfig(
        min_examples=5, cooldown_ms=0, job_timeout_ms=10 * MIN, drift_min_examples=15
    )
    state = TaskState(TASK)
    fill(state, wcfg, 10)
    first = job_at(state, tcfg)
    assert first is not None and state.in_flight["job_id"] == first.job_id
    fill(state, wcfg, 10, start=10)  # a window closes while the first job runs: it waits
    assert job_at(state, tcfg, NOW + 1) is None and state.pending == "window"
    adapter_published(state, "v2")  # a fast head: the job goes on
    assert job_at(state, tcfg, NOW + 2) is None and state.in_flight["job_id"] == first.job_id
    fill(state, wcfg, 5, start=20)
    trigger(state, "drift", "tfns-sentiment:error_rate:25")
    # The regime starts at the window open when the drift fired (5 examples); the job waits
    # for 15 examples that arrived after the drift.
    assert job_at(state, tcfg, NOW + 3) is None and state.pending == "drift"
    fill(state, wcfg, 10, start=25)
    assert job_at(state, tcfg, NOW + 3) is None
    fill(state, wcfg, 5, start=35)
    second = job_at(state, tcfg, NOW + 4)  # the first job is still in flight: replaced
    assert second.reason == "drift" and second.drift_event_id == "tfns-sentiment:error_rate:25"
    assert second.train_examples + second.holdout_examples == 20  # the regime only
    assert second.parent_version == "v2"
    assert state.in_flight["job_id"] == second.job_id
    assert job_at(state, tcfg, NOW + 5) is None


def test_the_cooldown_holds_window_jobs_then_the_pending_trigger_fires():
    wcfg = WindowConfig(window_size=10)
    tcfg = TriggerConfig(min_examples=5, cooldown_ms=MIN, job_timeout_ms=10 * MIN)
    state = TaskState(TASK)
    fill(state, wcfg, 10)
    first = job_at(state, tcfg)
    job_ended(state, first.job_id)
    fill(state, wcfg, 10, start=10)
    assert job_at(state, tcfg, NOW + MIN - 1) is None
    assert job_at(state, tcfg, NOW + MIN).reason == "window"


def test_a_rejected_or_failed_job_leaves_flight_when_the_trainer_says_so():
    wcfg = WindowConfig(window_size=10)
    tcfg = TriggerConfig(min_examples=5, cooldown_ms=0, job_timeout_ms=60 * MIN)
    state = TaskState(TASK)
    fill(state, wcfg, 10)
    first = job_at(state, tcfg)
    fill(state, wcfg, 10, start=10)
    assert job_at(state, tcfg, NOW + 1) is None  # still in flight
    job_ended(state, "some-other-job")
    assert job_at(state, tcfg, NOW + 2) is None
    job_ended(state, first.job_id)  # the gate rejected it: no adapter will come
    assert job_at(state, tcfg, NOW + 3).reason == "window"


def test_a_job_that_never_comes_back_stops_blocking_after_the_timeout():
    wcfg = WindowConfig(window_size=10)
    tcfg = TriggerConfig(min_examples=5, cooldown_ms=0, job_timeout_ms=MIN)
    state = TaskState(TASK)
    fill(state, wcfg, 10)
    assert job_at(state, tcfg) is not None
    fill(state, wcfg, 10, start=10)
    assert job_at(state, tcfg, NOW + MIN - 1) is None
    assert job_at(state, tcfg, NOW + MIN) is not None


def test_drift_closes_the_open_window_and_waits_for_enough_examples_of_the_new_regime():
    wcfg = WindowConfig(window_size=1000)
    tcfg = TriggerConfig(min_examples=50, cooldown_ms=0, job_timeout_ms=MIN, drift_min_examples=50)
    state = TaskState(TASK)
    fill(state, wcfg, 30)
    trigger(state, "drift", "tfns-sentiment:input_tokens:30")
    assert state.open is None and [w.count for w in state.closed] == [30]
    fill(state, wcfg, 20, start=30)
    assert job_at(state, tcfg) is None  # too few examples since the drift: the trigger waits
    fill(state, wcfg, 30, start=50)
    job = job_at(state, tcfg)
    # The window open at the drift (30) and the 50 after it; the holdout is of the latter.
    assert job.reason == "drift" and job.train_examples + job.holdout_examples == 80
    assert state.open is None and state.closed == []


def test_jobs_of_a_regime_train_on_all_of_it_up_to_the_cap():
    wcfg = WindowConfig(window_size=20, holdout_fraction=0.25)
    tcfg = TriggerConfig(min_examples=20, cooldown_ms=0, job_timeout_ms=MIN, regime_max_examples=60)
    state = TaskState(TASK)
    sizes = []
    for n in range(5):
        fill(state, wcfg, 20, start=20 * n)
        job = job_at(state, tcfg, NOW + n)
        sizes.append(job.train_examples + job.holdout_examples)
        job_ended(state, job.job_id)
    # Each job takes every example so far, newest first, until the 60-example cap.
    assert sizes == [20, 40, 60, 60, 60]


def test_scheduled_retraining_ignores_drift():
    wcfg = WindowConfig(window_size=20)
    tcfg = TriggerConfig(min_examples=20, cooldown_ms=0, job_timeout_ms=MIN, on_drift=False)
    state = TaskState(TASK)
    fill(state, wcfg, 10)
    trigger(state, "drift", "tfns-sentiment:error_rate:10")
    fill(state, wcfg, 5, start=10)
    assert job_at(state, tcfg) is None  # the drift starts no job
    fill(state, wcfg, 20, start=15)
    assert job_at(state, tcfg).reason == "window"


def test_rehearsal_ranges_come_from_windows_before_the_regime_only():
    wcfg = WindowConfig(window_size=30)
    tcfg = TriggerConfig(
        min_examples=10, cooldown_ms=0, job_timeout_ms=MIN, rehearsal_fraction=0.5,
        drift_min_examples=20,
    )  # fmt: skip
    state = TaskState(TASK)
    for n in range(3):
        fill(state, wcfg, 30, start=30 * n)
        job = job_at(state, tcfg, NOW + n)
        assert job.rehearsal_ranges == []  # one regime so far: nothing older to rehearse
        job_ended(state, job.job_id)
    fill(state, wcfg, 10, start=90)
    trigger(state, "drift", "tfns-sentiment:error_rate:100")
    fill(state, wcfg, 20, start=100)
    assert state.closed[-1].count == 10  # the regime's first window: the one open at the drift
    before = TaskState.from_dict(state.to_dict())
    drift_job = job_at(state, tcfg, NOW + 10)
    assert drift_job.reason == "drift" and drift_job.rehearsal_ranges
    first_new = {r.partition: r.start for r in drift_job.train_ranges}
    for r in drift_job.rehearsal_ranges:
        assert r.end <= first_new[r.partition]
    # The sample is seeded by the job id: the same job rebuilt from the same state after a
    # crash has the same one.
    rebuilt = job_at(before, tcfg, NOW + 10)
    assert rebuilt.job_id == drift_job.job_id
    assert rebuilt.rehearsal_ranges == drift_job.rehearsal_ranges


def test_a_second_statistic_seeing_the_same_shift_starts_no_new_regime():
    wcfg = WindowConfig(window_size=1000)
    tcfg = TriggerConfig(min_examples=50, cooldown_ms=0, job_timeout_ms=MIN, drift_min_examples=20)
    state = TaskState(TASK)
    fill(state, wcfg, 100)
    trigger(state, "drift", "tfns-sentiment:error_rate:100", settle_examples=300)
    regime = state.regime_start
    fill(state, wcfg, 10, start=100)
    trigger(state, "drift", "tfns-sentiment:label_prior:0:110", settle_examples=300)
    assert state.regime_start == regime  # the same shift: the regime and its job stand
    fill(state, wcfg, 10, start=110)
    job = job_at(state, tcfg)
    assert job.drift_event_id == "tfns-sentiment:error_rate:100"
    assert job.train_examples + job.holdout_examples == 120  # the open window and all after


def test_the_holdout_reaches_into_older_windows_when_the_newest_is_small():
    wcfg = WindowConfig(window_size=30, holdout_fraction=0.25)  # tails of 9
    tcfg = TriggerConfig(
        min_examples=10, cooldown_ms=0, job_timeout_ms=MIN, drift_min_examples=3,
        holdout_fraction=0.25,
    )  # fmt: skip
    state = TaskState(TASK)
    fill(state, wcfg, 25)
    trigger(state, "drift", "tfns-sentiment:error_rate:25", settle_examples=0)
    fill(state, wcfg, 3, start=25)  # the newest window holds only 3 examples
    job = job_at(state, tcfg)
    assert job.reason == "drift"
    assert job.holdout_examples == 7  # 25% of 28: 3 from the newest window, 4 before them
    for held in job.holdout_ranges:
        for train in job.train_ranges:
            if held.partition == train.partition:
                assert train.end <= held.start


def test_waiting_for_a_drift_job_keeps_the_regime_whole():
    """The policy is checked after every record; the wait must not cut the regime up."""
    wcfg = WindowConfig(window_size=150, holdout_fraction=0.25)
    tcfg = TriggerConfig(
        min_examples=100, cooldown_ms=0, job_timeout_ms=10 * MIN, drift_min_examples=60,
        holdout_fraction=0.25,
    )  # fmt: skip
    state = TaskState(TASK)
    fill(state, wcfg, 150)
    first = job_at(state, tcfg)  # in flight from here on
    fill(state, wcfg, 200, start=150)  # a full window waits behind it, 50 more are open
    trigger(state, "drift", "tfns-sentiment:error_rate:350", settle_examples=300)
    job = None
    for n in range(350, 420):
        fill(state, wcfg, 1, start=n)
        job = job or job_at(state, tcfg, NOW + n)
    assert first is not None and job is not None and job.reason == "drift"
    # The 50 open at the drift and the 60 after it: all of the regime, in one piece.
    assert job.train_examples + job.holdout_examples == 110
    assert job.holdout_examples >= 25


def test_a_located_drift_starts_the_regime_where_the_change_began():
    wcfg = WindowConfig(window_size=150, holdout_fraction=0.25)
    tcfg = TriggerConfig(min_examples=150, cooldown_ms=0, job_timeout_ms=MIN, drift_min_examples=50)
    state = TaskState(TASK)
    fill(state, wcfg, 300 + 100)  # two full windows, and 100 in the open one
    fill(state, wcfg, 20, start=400)  # the change began here; the detector fired 20 later
    trigger(state, "drift", "tfns-sentiment:error_rate:420", since=20, tail_size=wcfg.tail_size)
    # The open window is cut at the change: 100 examples before it, 20 of the new regime.
    assert all(len(w.tail) <= wcfg.tail_size for w in [*state.closed, *state.history])
    # The part before the cut is the old regime's: rehearsal, not new examples.
    assert [w.count for w in state.closed] == [20] and state.history[-1].count == 100
    fill(state, wcfg, 29, start=420)
    assert job_at(state, tcfg) is None  # 49 examples of the new regime: the trigger waits
    fill(state, wcfg, 1, start=449)
    job = job_at(state, tcfg)
    assert job.reason == "drift" and job.train_examples + job.holdout_examples == 50
    # Every example before the change is rehearsal, never training data of the new regime.
    first_new = {p: 10 + i // 3 for i in range(400, 403) for p in [i % 3]}
    assert all(r.start >= first_new[r.partition] for r in job.train_ranges)
    assert all(r.end <= first_new[r.partition] for r in job.rehearsal_ranges)
    assert job.rehearsal_ranges  # the windows before the change are rehearsed
    # Nothing of the old regime is left to trigger a window job of its own.
    job_ended(state, job.job_id)
    assert state.closed == [] and job_at(state, tcfg) is None


def test_an_unlocated_drift_starts_the_regime_at_the_open_window_and_waits():
    wcfg = WindowConfig(window_size=150)
    tcfg = TriggerConfig(min_examples=150, cooldown_ms=0, job_timeout_ms=MIN, drift_min_examples=50)
    state = TaskState(TASK)
    fill(state, wcfg, 100)
    trigger(state, "drift", "tfns-sentiment:error_rate:100", since=None)
    fill(state, wcfg, 49, start=100)
    assert job_at(state, tcfg) is None  # counted from the detection, not the window's start
    fill(state, wcfg, 1, start=149)
    job = job_at(state, tcfg)
    assert job.reason == "drift" and job.train_examples + job.holdout_examples == 150


def test_a_large_regime_holds_out_its_newest_window_whole_and_no_more():
    wcfg = WindowConfig(window_size=150, holdout_fraction=0.25)  # tails of 39
    tcfg = TriggerConfig(min_examples=150, cooldown_ms=0, job_timeout_ms=MIN, holdout_fraction=0.25)
    state = TaskState(TASK)
    fill(state, wcfg, 400)
    job = job_at(state, tcfg)
    assert job.holdout_examples == 39  # a quarter of 300 is more than the newest tail holds
    job_ended(state, job.job_id)
    fill(state, wcfg, 1200, start=400)
    job = job_at(state, tcfg)
    # A quarter of 1,500 is 375; the holdout stops at one window, the newest, held whole.
    assert job.holdout_examples == 150 and job.train_examples == 1500 - 150
    newest = state.history[-1]
    assert {r.partition: r.start for r in job.holdout_ranges} == {
        p: start for p, (start, _) in newest.ranges.items()
    }
    for held in job.holdout_ranges:
        for train in job.train_ranges:
            if held.partition == train.partition:
                assert train.end <= held.start
