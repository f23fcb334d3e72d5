"""Settings per layer: one frozen, typed class per part of the system, under short names.

:class:`~streamtune.core.settings.Settings` stays the one place that reads ``STREAMTUNE_*``
variables (flat fields, one per variable, validated there). Each layer class here mirrors the
fields of one layer under short names, with the same types, defaults and limits (copied from
the flat field, so they cannot drift apart), and ``settings.<layer>`` builds it::

    settings.drift     DriftSettings     STREAMTUNE_DRIFT_*   (detectors)
    settings.windows   WindowSettings    STREAMTUNE_WINDOW_*, HOLDOUT_FRACTION
    settings.trigger   TriggerSettings   when a job starts and what it trains on
    settings.gate      GateSettings      STREAMTUNE_GATE_*, SOURCE_TRUST_*
    settings.train     TrainSettings     STREAMTUNE_TRAIN_*, BOOTSTRAP_*
    settings.serve     ServeSettings     STREAMTUNE_SERVE_*
    settings.adapters  AdapterSettings   STREAMTUNE_ADAPTER_* (how adapters travel)
    settings.alerts    AlertSettings     STREAMTUNE_ALERT_*
    settings.monitor   MonitorSettings   STREAMTUNE_MONITOR_*
    settings.health    HealthSettings    HTTP_HOST, HEALTH_* (every process's /healthz)
    settings.worker    WorkerSettings    STREAMTUNE_WORKER_*, STREAM_MAX_AHEAD_S
    settings.join      JoinSettings      STREAMTUNE_JOIN_*
    settings.security  SecuritySettings  ACL principals, signing and trusted keys

A library takes its layer's class, never the whole ``Settings``; a process (serve, trainer,
worker, monitor) holds the ``Settings`` and passes ``settings.<layer>`` down. Every field
belongs to exactly one layer (:data:`LAYERS`) or is process-level (:data:`PROCESS_FIELDS`:
the Kafka connection, topics, the local broker, model, device and paths). A layer may also
carry a copy of a field another layer owns (``borrowed``), e.g. ``stream_max_ahead_s``.

>>> from streamtune.core.settings import Settings, secret_value
>>> Settings(gate_alpha=0.05).gate.alpha
0.05
>>> GateSettings().alpha == Settings().gate_alpha  # the same defaults, without a Settings
True
>>> WindowSettings(size=0, max_age_s=0)  # checked as Settings checks it
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for WindowSettings
  Value error, windows never close: ...
"""

from __future__ import annotations

from copy import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from streamtune.core.errors import ConfigError
from streamtune.core.settings import Settings, secret_value

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo


def _mirror(name: str, *, borrowed: bool = False) -> Any:
    """The flat field ``name`` of Settings (default, limits, description) for a layer field."""
    info: FieldInfo = copy(Settings.model_fields[name])
    info.json_schema_extra = {"setting": name, "borrowed": borrowed}
    return info


class Layer(BaseModel):
    """One layer's settings. ``FIELDS`` maps each short name to its flat Settings field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: short name -> the flat field of Settings (and so ``STREAMTUNE_<FLAT>``) it mirrors.
    FIELDS: ClassVar[dict[str, str]] = {}
    #: short names whose flat field another layer owns.
    BORROWED: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        fields, borrowed = {}, set()
        for short, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if not isinstance(extra, dict) or "setting" not in extra:
                raise TypeError(f"{cls.__name__}.{short} mirrors no Settings field")
            fields[short] = str(extra["setting"])
            if extra.get("borrowed"):
                borrowed.add(short)
        cls.FIELDS = fields
        cls.BORROWED = frozenset(borrowed)

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """This layer's values of ``settings`` (what ``settings.<layer>`` returns).

        >>> DriftSettings.of(Settings(drift_grace=50)).grace
        50
        """
        # Settings validated every value already.
        return cls.model_construct(**{s: getattr(settings, f) for s, f in cls.FIELDS.items()})

    @classmethod
    def owned(cls) -> dict[str, str]:
        """short name -> flat field, for the fields this layer owns (not the borrowed)."""
        return {s: f for s, f in cls.FIELDS.items() if s not in cls.BORROWED}


class DriftSettings(Layer):
    """The worker's drift detectors (``streams.drift``)."""

    error_delta: float = _mirror("drift_error_delta")
    error_ph_threshold: float = _mirror("drift_error_ph_threshold")
    error_ph_delta: float = _mirror("drift_error_ph_delta")
    confidence_delta: float = _mirror("drift_confidence_delta")
    input_delta: float = _mirror("drift_input_delta")
    label_delta: float = _mirror("drift_label_delta")
    grace: int = _mirror("drift_grace")
    replay_events: int = _mirror("drift_replay_events")


class WindowSettings(Layer):
    """When the worker closes a window of labelled examples (``streams.windows``)."""

    size: int = _mirror("window_size")
    max_age_s: float = _mirror("window_max_age_s")
    holdout_fraction: float = _mirror("holdout_fraction")

    @model_validator(mode="after")
    def _closes(self) -> Self:
        if self.size == 0 and self.max_age_s == 0:
            raise ConfigError(
                "windows never close: set STREAMTUNE_WINDOW_SIZE or STREAMTUNE_WINDOW_MAX_AGE_S"
            )
        return self


class TriggerSettings(Layer):
    """When the worker starts a train job, and what the job trains on (``streams.trigger``)."""

    min_examples: int = _mirror("train_min_examples")
    cooldown_s: float = _mirror("train_cooldown_s")
    on_drift: bool = _mirror("train_on_drift")
    schedule_s: float = _mirror("train_schedule_s")
    job_timeout_s: float = _mirror("train_job_timeout_s")
    drift_min_examples: int = _mirror("drift_min_examples")
    drift_settle_examples: int = _mirror("drift_settle_examples")
    regime_max_examples: int = _mirror("regime_max_examples")
    rehearsal_fraction: float = _mirror("rehearsal_fraction")
    rehearsal_windows: int = _mirror("rehearsal_windows")
    holdout_fraction: float = _mirror("holdout_fraction", borrowed=True)


class GateSettings(Layer):
    """What a new adapter must show before it goes live, and which feedback it learns from."""

    alpha: float = _mirror("gate_alpha")
    min_improvement: float = _mirror("gate_min_improvement")
    anchor_tolerance: float = _mirror("gate_anchor_tolerance")
    anchor_floor: float = _mirror("gate_anchor_floor")
    anchor_size: int = _mirror("gate_anchor_size")
    source_trust_min: float = _mirror("source_trust_min")
    source_trust_prior: float = _mirror("source_trust_prior")


class TrainSettings(Layer):
    """The trainer: LoRA, the training recipe, the bootstrap's, and the job loop."""

    group_id: str = _mirror("train_group_id")
    lora_r: int = _mirror("train_lora_r")
    lora_alpha: int = _mirror("train_lora_alpha")
    lora_dropout: float = _mirror("train_lora_dropout")
    lora_targets: str = _mirror("train_lora_targets")
    lora_layers: int = _mirror("train_lora_layers")
    bootstrap_lora_layers: int = _mirror("bootstrap_lora_layers")
    bootstrap_epochs: int = _mirror("bootstrap_epochs")
    bootstrap_learning_rate: float = _mirror("bootstrap_learning_rate")
    fast_head: bool = _mirror("train_fast_head")
    epochs: int = _mirror("train_epochs")
    batch_size: int = _mirror("train_batch_size")
    learning_rate: float = _mirror("train_learning_rate")
    weight_decay: float = _mirror("train_weight_decay")
    max_length: int = _mirror("train_max_length")
    seed: int = _mirror("train_seed")
    class_weighted: bool = _mirror("train_class_weighted")
    validation_fraction: float = _mirror("train_validation_fraction")
    patience: int = _mirror("train_patience")
    bf16: bool = _mirror("train_bf16")
    warm_start: bool = _mirror("train_warm_start")
    min_valid_examples: int = _mirror("train_min_valid_examples")
    max_attempts: int = _mirror("train_max_attempts")
    retry_backoff_s: float = _mirror("train_retry_backoff_s")
    max_poll_interval_ms: int = _mirror("train_max_poll_interval_ms")
    metrics_port: int = _mirror("train_metrics_port")

    def lora_target_modules(self) -> tuple[str, ...]:
        """``lora_targets`` as a tuple.

        >>> TrainSettings(lora_targets="query, value").lora_target_modules()
        ('query', 'value')
        """
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())


class ServeSettings(Layer):
    """Serve replicas: their group, tasks, batching, precision and /metrics port."""

    group_id: str = _mirror("serve_group_id")
    tasks: str = _mirror("serve_tasks")
    max_batch: int = _mirror("serve_max_batch")
    max_wait_ms: int = _mirror("serve_max_wait_ms")
    precision: Literal["auto", "fp32", "bf16", "int8"] = _mirror("serve_precision")
    packed_weights: bool = _mirror("serve_packed_weights")
    metrics_port: int = _mirror("serve_metrics_port")

    def served_tasks(self) -> list[str]:
        """The tasks to serve: ``tasks``, or every known task when it is empty.

        >>> ServeSettings(tasks="tfns-sentiment").served_tasks()
        ['tfns-sentiment']
        """
        from schemas.tasks import get_task, known_tasks

        names = [t.strip() for t in self.tasks.split(",") if t.strip()] or list(known_tasks())
        for name in names:
            get_task(name)  # unknown names fail here, with the list of known ones
        return names


class AdapterSettings(Layer):
    """How an adapter travels on model-updates: inline, or in chunks."""

    inline_max_bytes: int = _mirror("adapter_inline_max_bytes")
    chunk_bytes: int = _mirror("adapter_chunk_bytes")


class AlertSettings(Layer):
    """Entity sentiment alerts (``streams.alerting``) and their webhook."""

    task: str = _mirror("alert_task")
    entities_file: Path | None = _mirror("alert_entities_file")
    window_events: int = _mirror("alert_window_events")
    window_s: float = _mirror("alert_window_s")
    baseline_events: int = _mirror("alert_baseline_events")
    min_baseline_events: int = _mirror("alert_min_baseline_events")
    min_events: int = _mirror("alert_min_events")
    cusum_h: float = _mirror("alert_cusum_h")
    cusum_clear: float = _mirror("alert_cusum_clear")
    min_lift: float = _mirror("alert_min_lift")
    cooldown_s: float = _mirror("alert_cooldown_s")
    evict_after_s: float = _mirror("alert_evict_after_s")
    max_entities: int = _mirror("alert_max_entities")
    webhook_url: str | None = _mirror("alert_webhook_url")
    webhook_token: SecretStr | None = _mirror("alert_webhook_token")
    webhook_token_file: Path | None = _mirror("alert_webhook_token_file")
    webhook_timeout_s: float = _mirror("alert_webhook_timeout_s")
    webhook_retries: int = _mirror("alert_webhook_retries")
    webhook_queue: int = _mirror("alert_webhook_queue")
    max_ahead_s: float = _mirror("stream_max_ahead_s", borrowed=True)

    def webhook_bearer(self) -> str | None:
        """The webhook's bearer token, from the file if one is named, else the environment.

        >>> AlertSettings(webhook_token="t0k").webhook_bearer()
        't0k'
        """
        return secret_value(self.webhook_token, self.webhook_token_file, "alert_webhook_token_file")


class MonitorSettings(Layer):
    """``streamtune monitor``: its dashboard, rolling figures and history."""

    token: SecretStr | None = _mirror("monitor_token")
    port: int = _mirror("monitor_port")
    window: int = _mirror("monitor_window")
    cbpe_block: int = _mirror("monitor_cbpe_block")
    calibration_window: int = _mirror("monitor_calibration_window")
    history_s: float = _mirror("monitor_history_s")
    bucket_s: float = _mirror("monitor_bucket_s")
    max_entities: int = _mirror("monitor_max_entities")
    entities_file: Path | None = _mirror("alert_entities_file", borrowed=True)
    max_ahead_s: float = _mirror("stream_max_ahead_s", borrowed=True)

    def dashboard_token(self) -> str | None:
        """The token, or None when none is set; empty is none, so compose can pass
        ``${STREAMTUNE_MONITOR_TOKEN:-}`` through.

        >>> MonitorSettings(token="").dashboard_token() is None
        True
        """
        token = self.token.get_secret_value() if self.token else ""
        return token or None


class HealthSettings(Layer):
    """Every process's HTTP endpoints (/metrics, /healthz): where they bind, when they fail."""

    http_host: str = _mirror("http_host")
    stall_s: float = _mirror("health_stall_s")
    interval_s: float = _mirror("health_interval_s")


class WorkerSettings(Layer):
    """The Faust stream worker: its app id, consumer, clock and /metrics port."""

    app_id: str = _mirror("worker_app_id")
    commit_interval_s: float = _mirror("worker_commit_interval_s")
    max_poll_records: int = _mirror("worker_max_poll_records")
    session_timeout_s: float = _mirror("worker_session_timeout_s")
    partition_stall_s: float = _mirror("worker_partition_stall_s")
    instance_id: str | None = _mirror("worker_instance_id")
    tick_interval_s: float = _mirror("worker_tick_interval_s")
    metrics_port: int = _mirror("worker_metrics_port")
    max_ahead_s: float = _mirror("stream_max_ahead_s")


class JoinSettings(Layer):
    """The worker's join of interactions, predictions and feedback (``streams.join``)."""

    ttl_s: float = _mirror("join_ttl_s")
    prediction_wait_s: float = _mirror("join_prediction_wait_s")
    max_entries: int = _mirror("join_max_entries")
    max_ahead_s: float = _mirror("stream_max_ahead_s", borrowed=True)


class SecuritySettings(Layer):
    """Who may do what (``streamtune acls``), and the keys adapters are signed and checked with."""

    producer_principal: str = _mirror("acl_producer_principal")
    worker_principal: str = _mirror("acl_worker_principal")
    serve_principal: str = _mirror("acl_serve_principal")
    trainer_principal: str = _mirror("acl_trainer_principal")
    monitor_principal: str = _mirror("acl_monitor_principal")
    signing_key_file: Path | None = _mirror("signing_key_file")
    signing_key: SecretStr | None = _mirror("signing_key")
    trusted_keys_dir: Path | None = _mirror("trusted_keys_dir")
    trusted_keys: str = _mirror("trusted_keys")


#: ``settings.<name>`` -> its layer class.
LAYERS: dict[str, type[Layer]] = {
    "drift": DriftSettings,
    "windows": WindowSettings,
    "trigger": TriggerSettings,
    "gate": GateSettings,
    "train": TrainSettings,
    "serve": ServeSettings,
    "adapters": AdapterSettings,
    "alerts": AlertSettings,
    "monitor": MonitorSettings,
    "health": HealthSettings,
    "worker": WorkerSettings,
    "join": JoinSettings,
    "security": SecuritySettings,
}

#: Fields no layer owns: what every process needs to reach Kafka and run at all.
PROCESS_FIELDS: dict[str, tuple[str, ...]] = {
    "Kafka connection": (
        "bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
        "sasl_password", "sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
        "ssl_key_password", "ssl_check_hostname", "client_id", "request_timeout_ms",
    ),
    "Topics": ("topic_prefix", "stream_partitions", "replication_factor", "min_insync_replicas"),
    "Local broker": (
        "cache_dir", "kafka_version", "kafka_data_dir", "kafka_host", "kafka_port",
        "kafka_controller_port", "kafka_heap", "kafka_nodes", "kafka_start_timeout_s",
    ),
    "Model, device and paths": ("base_model", "device", "torch_threads", "data_dir"),
}  # fmt: skip
