"""Settings come from the environment; topic definitions live in one place."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.topics import CO_PARTITIONED, TOPIC_NAMES, topic_specs
from streamtune.core.errors import ConfigError
from streamtune.core.settings import Settings


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMTUNE_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("STREAMTUNE_TOPIC_PREFIX", "prod-")
    monkeypatch.setenv("STREAMTUNE_STREAM_PARTITIONS", "12")
    s = Settings()
    assert s.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.topic("feedback") == "prod-feedback"
    assert {
        spec.partitions
        for spec in s.topic_specs()
        if spec.name.removeprefix("prod-") in CO_PARTITIONED
    } == {12}


def test_settings_are_frozen():
    with pytest.raises(ValidationError):
        Settings().bootstrap_servers = "elsewhere:9092"  # type: ignore[misc]


def test_secrets_are_masked_and_can_come_from_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "sasl"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("STREAMTUNE_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMTUNE_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("STREAMTUNE_SASL_USERNAME", "streamtune")
    monkeypatch.setenv("STREAMTUNE_SASL_PASSWORD_FILE", str(secret))
    s = Settings()
    assert "s3cret" not in repr(s)
    kwargs = s.kafka_client_kwargs()
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


def test_sasl_without_mechanism_is_a_clear_error():
    with pytest.raises((ConfigError, ValidationError), match="STREAMTUNE_SASL_MECHANISM"):
        Settings(security_protocol="SASL_SSL")


def test_invalid_mode_is_rejected():
    with pytest.raises(ValidationError, match="device"):
        Settings(device="tpu")


def test_unknown_topic_name_names_the_valid_ones():
    with pytest.raises(ConfigError, match="topics are: interactions"):
        Settings().topic("interaction")


def test_topic_definitions():
    specs = {s.name: s for s in topic_specs()}
    assert set(specs) == set(TOPIC_NAMES) == {
        "interactions", "feedback", "predictions", "labelled", "drift-events",
        "train-jobs", "train-status", "model-updates", "model-events", "alerts", "dead-letter",
    }  # fmt: skip
    assert len({specs[name].partitions for name in CO_PARTITIONED}) == 1
    assert specs["model-updates"].configs["cleanup.policy"] == "compact"
    assert specs["labelled"].configs["retention.ms"] == "-1"  # the durable training store
    assert all(
        s.configs["cleanup.policy"] == "delete" for n, s in specs.items() if n != "model-updates"
    )


def test_the_worker_keeps_its_data_folder_in_the_cache(tmp_path, monkeypatch):
    # Faust's default is "<app id>-data" in the working directory: one stray folder per run.
    from streams.app import create_app

    monkeypatch.chdir(tmp_path)
    app = create_app(Settings(cache_dir=tmp_path / "cache"))
    assert app.conf.datadir.is_relative_to(tmp_path / "cache")
    assert app.conf.name in str(app.conf.datadir)
    app.conf.datadir.mkdir()  # what the worker does at start-up: its parent must exist
