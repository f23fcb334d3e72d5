"""Settings per layer (streamtune.core.layers): every field has one home, each layer class
reads the same variables as the flat fields, and a library works from its layer alone.
Plus the one logging configuration per process (streamtune.core.logging_setup)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from streams.alerting import AlertConfig
from streams.drift import DriftConfig
from streams.join import JoinConfig
from streams.trigger import TriggerConfig
from streams.windows import WindowConfig
from streamtune.cli import build_parser
from streamtune.core.layers import (
    LAYERS,
    PROCESS_FIELDS,
    AlertSettings,
    DriftSettings,
    GateSettings,
    JoinSettings,
    MonitorSettings,
    ServeSettings,
    TrainSettings,
    TriggerSettings,
    WindowSettings,
)
from streamtune.core.logging_setup import configure_logging, quiet_aiokafka
from streamtune.core.settings import Settings
from streamtune.monitor.feed import new_state
from streamtune.train.config import gate_rule, lora_spec, train_config
from streamtune.train.dataset import drop_untrusted_sources

PROCESS = {name for names in PROCESS_FIELDS.values() for name in names}


def test_every_field_belongs_to_one_layer_or_is_process_level():
    owners: dict[str, list[str]] = {}
    for layer, cls in LAYERS.items():
        for flat in cls.owned().values():
            owners.setdefault(flat, []).append(layer)
    for flat in PROCESS:
        owners.setdefault(flat, []).append("process")
    assert {n: o for n, o in owners.items() if len(o) != 1} == {}, "a field with two homes"
    assert set(owners) == set(Settings.model_fields), "a field with no home (or a stray name)"


def test_a_borrowed_field_is_owned_by_another_layer():
    owned = {flat for cls in LAYERS.values() for flat in cls.owned().values()}
    for cls in LAYERS.values():
        for short in cls.BORROWED:
            assert cls.FIELDS[short] in owned - set(cls.owned().values())


def test_layer_fields_mirror_the_flat_fields():
    """Same type, default and limits as the flat field they mirror: they cannot drift apart."""
    for cls in LAYERS.values():
        for short, flat in cls.FIELDS.items():
            mine, theirs = cls.model_fields[short], Settings.model_fields[flat]
            assert mine.annotation == theirs.annotation, (cls.__name__, short)
            assert mine.default == theirs.default, (cls.__name__, short)
            assert mine.metadata == theirs.metadata, (cls.__name__, short)
        # A layer built without a Settings has the defaults a Settings has (the environment
        # of the tests sets some variables; model_construct reads none).
        assert cls() == cls.of(Settings.model_construct())


def test_layer_names_shadow_no_field_or_method():
    for name, cls in LAYERS.items():
        assert name not in Settings.model_fields
        assert isinstance(vars(Settings)[name], property), name
        assert type(getattr(Settings(), name)) is cls


#: A value unlike the default for a field of each layer, as the environment spells it.
ENV = {
    "STREAMTUNE_DRIFT_GRACE": "50",
    "STREAMTUNE_DRIFT_ERROR_PH_THRESHOLD": "12.5",
    "STREAMTUNE_WINDOW_SIZE": "0",
    "STREAMTUNE_WINDOW_MAX_AGE_S": "30",
    "STREAMTUNE_HOLDOUT_FRACTION": "0.3",
    "STREAMTUNE_TRAIN_MIN_EXAMPLES": "40",
    "STREAMTUNE_TRAIN_ON_DRIFT": "false",
    "STREAMTUNE_GATE_ALPHA": "0.05",
    "STREAMTUNE_SOURCE_TRUST_MIN": "0.5",
    "STREAMTUNE_TRAIN_LORA_R": "8",
    "STREAMTUNE_TRAIN_LORA_TARGETS": "query,value",
    "STREAMTUNE_TRAIN_METRICS_PORT": "0",
    "STREAMTUNE_SERVE_PRECISION": "fp32",
    "STREAMTUNE_SERVE_GROUP_ID": "replicas",
    "STREAMTUNE_ADAPTER_CHUNK_BYTES": "4096",
    "STREAMTUNE_ALERT_TASK": "crypto-sentiment",
    "STREAMTUNE_ALERT_WEBHOOK_TOKEN": "hook-secret",
    "STREAMTUNE_MONITOR_TOKEN": "dash-secret",
    "STREAMTUNE_MONITOR_WINDOW": "50",
    "STREAMTUNE_HEALTH_STALL_S": "5",
    "STREAMTUNE_WORKER_APP_ID": "w2",
    "STREAMTUNE_STREAM_MAX_AHEAD_S": "7",
    "STREAMTUNE_JOIN_TTL_S": "60",
    "STREAMTUNE_ACL_SERVE_PRINCIPAL": "User:replica",
    "STREAMTUNE_TRUSTED_KEYS": "a2V5",
}


def test_layers_built_from_the_environment_match_the_flat_fields(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    for layer, cls in LAYERS.items():
        built = getattr(s, layer)
        for short, flat in cls.FIELDS.items():
            assert getattr(built, short) == getattr(s, flat), f"{layer}.{short} != {flat}"
    # ... and the environment did reach them, under their short names.
    assert (s.drift.grace, s.drift.error_ph_threshold) == (50, 12.5)
    assert (s.windows.size, s.windows.max_age_s, s.trigger.holdout_fraction) == (0, 30.0, 0.3)
    assert (s.trigger.min_examples, s.trigger.on_drift) == (40, False)
    assert (s.gate.alpha, s.gate.source_trust_min) == (0.05, 0.5)
    assert s.train.lora_target_modules() == ("query", "value") == s.lora_targets()
    assert (s.serve.precision, s.serve.group_id, s.adapters.chunk_bytes) == (
        "fp32",
        "replicas",
        4096,
    )
    assert s.alerts.webhook_bearer() == "hook-secret" == s.webhook_token()
    assert s.monitor.dashboard_token() == "dash-secret" == s.dashboard_token()
    assert (s.join.max_ahead_s, s.alerts.max_ahead_s, s.monitor.max_ahead_s) == (7.0,) * 3
    assert (s.worker.app_id, s.security.serve_principal) == ("w2", "User:replica")
    assert "dash-secret" not in repr(s.monitor) and "hook-secret" not in repr(s.alerts)


def test_layer_classes_are_frozen_and_validated():
    with pytest.raises(ValueError):
        GateSettings(alpha=2.0)  # the flat field's limit (≤ 1)
    with pytest.raises(ValueError, match="windows never close"):
        WindowSettings(size=0, max_age_s=0)
    with pytest.raises(ValueError):
        DriftSettings().grace = 3  # type: ignore[misc]


@pytest.fixture
def no_settings(monkeypatch):
    """Any use of the whole Settings fails: the code under test must not build one."""

    def refuse(*args, **kwargs):
        raise AssertionError("built a Settings")

    monkeypatch.setattr(Settings, "__init__", refuse)


def test_libraries_work_from_their_layer_alone(no_settings):
    drift = DriftConfig.from_settings(DriftSettings(grace=5, error_ph_threshold=9.0))
    assert (drift.grace, drift.error_ph_threshold) == (5, 9.0)
    windows = WindowConfig.from_settings(WindowSettings(size=20, holdout_fraction=0.25))
    assert (windows.window_size, windows.tail_size) == (20, 6)
    trigger = TriggerConfig.from_settings(TriggerSettings(job_timeout_s=9), windows.tail_size)
    assert (trigger.job_timeout_ms, trigger.tail_size) == (9000, 6)
    join = JoinConfig.from_settings(JoinSettings(prediction_wait_s=0.5), frozenset({"t"}))
    assert (join.prediction_wait_ms, join.pair_tasks) == (500, frozenset({"t"}))
    alerts = AlertConfig.from_settings(AlertSettings(window_s=60, max_ahead_s=1))
    assert (alerts.window_ms, alerts.max_ahead_ms) == (60_000, 1000)
    assert new_state(MonitorSettings(window=30, cbpe_block=20)).window == 30
    assert gate_rule(GateSettings(anchor_floor=0.3)).anchor_floor == 0.3
    assert train_config(TrainSettings(batch_size=8), epochs=1).batch_size == 8
    encoder = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=6))
    spec = lora_spec(TrainSettings(lora_r=4, lora_layers=2), encoder)  # type: ignore[arg-type]
    assert (spec.r, spec.layers) == (4, (4, 5))
    assert drop_untrusted_sources(GateSettings(), [], []) == ([], [], [])
    assert ServeSettings(tasks="tfns-sentiment").served_tasks() == ["tfns-sentiment"]


def test_the_layer_gives_what_the_flat_settings_gave():
    s = Settings(gate_alpha=0.1, train_epochs=2, join_ttl_s=10, alert_cusum_h=4.0)
    assert gate_rule(s.gate).alpha == 0.1
    assert train_config(s.train).epochs == 2
    assert JoinConfig.from_settings(s.join).ttl_ms == 10_000
    assert AlertConfig.from_settings(s.alerts).h_fire == 4.0


@pytest.fixture
def restore_logging():
    loggers = [logging.getLogger(n) for n in ("streamtune", "aiokafka")]
    levels = [lg.level for lg in loggers]
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


@pytest.mark.parametrize(
    ("role", "verbose", "ours", "aiokafka"),
    [
        ("command", False, logging.NOTSET, logging.CRITICAL),
        ("command", True, logging.NOTSET, logging.NOTSET),
        ("service", False, logging.INFO, logging.WARNING),
        ("monitor", False, logging.INFO, logging.CRITICAL),
        ("worker", False, logging.NOTSET, logging.INFO),
        ("worker", True, logging.NOTSET, logging.INFO),  # DEBUG: a line per message sent
    ],
)
def test_configure_logging_sets_each_role(restore_logging, role, verbose, ours, aiokafka):
    configure_logging(logging.DEBUG if verbose else logging.WARNING, role=role)
    assert logging.getLogger("streamtune").level == ours
    assert logging.getLogger("aiokafka").level == aiokafka


def test_quiet_aiokafka_puts_the_level_back(restore_logging):
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    with pytest.raises(RuntimeError), quiet_aiokafka():
        assert logging.getLogger("aiokafka").level == logging.CRITICAL
        raise RuntimeError
    assert logging.getLogger("aiokafka").level == logging.WARNING


def test_each_command_names_its_logging_role():
    parser = build_parser()

    def role(*argv: str) -> str:
        args = parser.parse_args(argv)
        found = getattr(args, "log_role", "command")
        return found(args) if callable(found) else found

    assert role("serve") == role("train") == "service"
    assert role("monitor") == "monitor"
    assert (role("worker"), role("worker", "status")) == ("worker", "command")
    assert role("kafka", "status") == role("doctor") == "command"
