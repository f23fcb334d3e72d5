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


def test_one_job_in_flight_and_triggers_coalesce():
    wcfg = WindowConfig(window_size=10)
    tcfg = TriggerConfig(min_examples=5, cooldown_ms=0, job_timeout_ms=10 * MIN)
    state = TaskState(TASK)
    fill(state, wcfg, 10)
    first = job_at(state, tcfg)
    fill(state, wcfg, 30, start=10)  # three more windows while the first job runs
    trigger(state, "drift", "tfns-sentiment:error_rate:40")
    assert job_at(state, tcfg, NOW + 1) is None
    assert state.pending == "drift"
    adapter_published(state, "v2", first.job_id, NOW + 2)
    second = job_at(state, tcfg, NOW + 3)
    assert second.reason == "drift" and second.drift_event_id == "tfns-sentiment:error_rate:40"
    assert second.train_examples + second.holdout_examples == 30  # all three windows, once
    assert second.parent_version == "v2"
    assert job_at(state, tcfg, NOW + 4) is None


def test_the_cooldown_holds_then_the_pending_trigger_fires():
    wcfg = WindowConfig(window_size=10)
    tcfg = TriggerConfig(min_examples=5, cooldown_ms=MIN, job_timeout_ms=10 * MIN)
    state = TaskState(TASK)
    fill(state, wcfg, 10)
    first = job_at(state, tcfg)
    adapter_published(state, "v2", first.job_id, NOW)
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


def test_drift_closes_the_open_window_once_there_are_enough_examples():
    wcfg = WindowConfig(window_size=1000)
    tcfg = TriggerConfig(min_examples=50, cooldown_ms=0, job_timeout_ms=MIN)
    state = TaskState(TASK)
    fill(state, wcfg, 30)
    trigger(state, "drift", "tfns-sentiment:input_tokens:30")
    assert job_at(state, tcfg) is None  # too few examples yet: the trigger waits
    fill(state, wcfg, 20, start=30)
    job = job_at(state, tcfg)
    assert job.reason == "drift" and job.train_examples + job.holdout_examples == 50
    assert state.open is None and state.closed == []


def _four_jobs_with_rehearsal() -> list[TrainJob]:
    """Four windows of 30 examples, a job and a published adapter after each."""
    wcfg = WindowConfig(window_size=30)
    tcfg = TriggerConfig(min_examples=10, cooldown_ms=0, job_timeout_ms=MIN, rehearsal_fraction=0.5)
    state = TaskState(TASK)
    jobs = []
    for n in range(4):
        fill(state, wcfg, 30, start=30 * n)
        job = job_at(state, tcfg, NOW + n)
        adapter_published(state, f"v{n}", job.job_id, NOW + n)
        jobs.append(job)
    return jobs


def test_rehearsal_ranges_come_from_older_windows_only():
    jobs = _four_jobs_with_rehearsal()
    assert jobs[0].rehearsal_ranges == []
    last = jobs[-1]
    assert last.rehearsal_ranges
    first_new = {r.partition: r.start for r in last.train_ranges}
    for r in last.rehearsal_ranges:
        assert r.end <= first_new[r.partition]
    # The sample is seeded by the job id: the same history, rebuilt from scratch (as after
    # a restart), gives the same job with the same sample.
    rebuilt = _four_jobs_with_rehearsal()[-1]
    assert rebuilt.job_id == last.job_id
    assert rebuilt.rehearsal_ranges == last.rehearsal_ranges
