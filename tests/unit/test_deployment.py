"""docker-compose.yml, the Prometheus scrape config and the Grafana dashboard agree with the code.

There is no Docker engine in CI: the file is parsed and every service's command is parsed
by streamtune's own CLI, every STREAMTUNE_* variable builds a valid Settings, and every
scrape target and dashboard query names a service, port and metric that exist.
``docker compose config`` runs too where the Compose CLI is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from streamtune.cli import build_parser
from streamtune.core.observability import Metrics
from streamtune.core.settings import Settings
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
DASHBOARD = json.loads((REPO / "ops/grafana/dashboards/streamtune.json").read_text())

#: Service -> the port its /metrics and /healthz listen on.
METRICS_PORTS = {
    "serve-1": 9101,
    "serve-2": 9101,
    "worker-1": 9102,
    "worker-2": 9102,
    "trainer": 9103,
    "trainer-cpu": 9103,
    "monitor": 8090,
}


def streamtune_services() -> dict[str, dict]:
    return {n: s for n, s in SERVICES.items() if s.get("image") == "streamtune:latest"}


def served_port(service: dict) -> int | None:
    """The port a streamtune service serves /metrics on, from its command and environment."""
    command = service["command"]
    if command[:2] == ["streamtune", "monitor"]:
        return int(command[command.index("--port") + 1])
    env = service.get("environment", {})
    ports = [int(v) for k, v in env.items() if k.endswith("_METRICS_PORT")]
    return ports[0] if ports else None


def test_the_whole_system_is_there():
    assert {
        "kafka-1", "kafka-2", "kafka-3", "keys", "topics", "worker-1", "worker-2", "serve-1",
        "serve-2", "trainer", "trainer-cpu", "monitor", "prometheus", "grafana",
    } <= set(SERVICES)  # fmt: skip
    voters = SERVICES["kafka-1"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    assert {SERVICES[f"kafka-{i}"]["environment"]["KAFKA_NODE_ID"] for i in (1, 2, 3)} == {1, 2, 3}


def test_every_command_parses_with_the_streamtune_cli():
    parser = build_parser()
    for name, service in streamtune_services().items():
        command = service["command"]
        if command[0] == "sh":
            assert "streamtune keys generate" in command[-1], name
            continue
        assert command[0] == "streamtune", name
        args = parser.parse_args(command[1:])
        assert callable(args.func), name


def test_every_environment_builds_valid_settings():
    fields = set(Settings.model_fields)
    for name, service in streamtune_services().items():
        env = service["environment"]
        names = {k.removeprefix("STREAMTUNE_").lower() for k in env if k.startswith("STREAMTUNE_")}
        assert names <= fields, f"{name}: unknown settings {names - fields}"
        settings = Settings(**{k.removeprefix("STREAMTUNE_").lower(): v for k, v in env.items()})
        assert settings.replication_factor == 3 and settings.stream_partitions == 6
        assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092,kafka-3:9092"


def test_metrics_ports_and_healthchecks_agree():
    for name, port in METRICS_PORTS.items():
        service = SERVICES[name]
        assert served_port(service) == port, name
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"]), name
    assert SERVICES["monitor"]["ports"] == ["127.0.0.1:8090:8090"]


def test_trainer_reserves_a_gpu_and_has_a_cpu_fallback():
    gpu, cpu = SERVICES["trainer"], SERVICES["trainer-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["STREAMTUNE_DEVICE"] == "cuda"
    assert cpu["profiles"] == ["cpu"] and cpu["environment"]["STREAMTUNE_DEVICE"] == "cpu"
    assert "deploy" not in cpu


def test_volumes_are_declared_and_bind_mounts_exist():
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    keys = {v.split(":")[0] for v in SERVICES["trainer"]["volumes"]}
    assert keys == {"keys", "trusted-keys"}
    assert SERVICES["serve-1"]["volumes"] == ["trusted-keys:/keys/trusted:ro"]


def test_every_scrape_target_is_a_service_and_its_metrics_port():
    targets = [
        target
        for job in PROMETHEUS["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    for target in targets:
        host, port = target.split(":")
        assert host in SERVICES, target
        assert served_port(SERVICES[host]) == int(port), target
    assert {t.split(":")[0] for t in targets} == set(METRICS_PORTS)


def test_grafana_queries_name_metrics_the_processes_expose():
    exposed = {
        sample.name for family in Metrics().registry.collect() for sample in family.samples
    } | {family.name for family in Metrics().registry.collect()}
    exposed |= {f"{name}_bucket" for name in exposed} | {f"{name}_total" for name in exposed}
    queries = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    assert queries
    for query in queries:
        for metric in re.findall(r"streamtune_[a-z_]+", query):
            assert metric in exposed, f"{metric} in {query!r}"
    provider = yaml.safe_load(
        (REPO / "ops/grafana/provisioning/dashboards/streamtune.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the docker CLI has no compose plugin")
    result = subprocess.run(
        ["docker", "compose", "--profile", "cpu", "config", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
