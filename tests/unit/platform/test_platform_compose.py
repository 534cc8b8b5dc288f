"""docker-compose.yml agrees with Settings and `sf311 up`: the same variables, services, ports
and settings; it validates, names only files that exist and holds no secret."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from sf311.platform.services import Airflow, SparkCluster, all_services, cluster_services
from sf311.settings import PROJECT_ROOT, Settings


def _compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_every_sf311_variable_in_compose_is_a_setting() -> None:
    fields = {f"SF311_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for service in _compose()["services"].values():
        env = service.get("environment", {})
        used |= {key for key in env if key.startswith("SF311_")}
    assert used, "compose passes no SF311_ settings at all"
    assert used <= fields, f"unknown settings in docker-compose.yml: {sorted(used - fields)}"


def test_published_ports_are_the_default_settings_ports() -> None:
    defaults = Settings()
    expected = {
        "postgres": urlsplit(defaults.postgres_dsn.get_secret_value()).port,
        "kafka": int(defaults.kafka_bootstrap_servers.rsplit(":", 1)[1]),
        "registry": urlsplit(defaults.schema_registry_url).port,
        "mlflow": urlsplit(defaults.mlflow_tracking_uri).port,
        "airflow": defaults.airflow_port,
        "api": defaults.api_port,
        "dashboard": defaults.dashboard_port,
    }
    services = _compose()["services"]
    for name, port in expected.items():
        published = {int(str(p).rsplit(":", 2)[-2]) for p in services[name].get("ports", [])}
        assert port in published, f"{name}: compose publishes {published}, Settings uses {port}"


# Everything below validates the resolved file: `docker-compose config` (Debian's docker-compose,
# which `make setup` installs) interpolates .env.example, merges the anchors and checks the schema.
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as `docker-compose config` resolves it with .env.example."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (make setup installs Debian's package)")
    done = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def _published(service: dict) -> dict[int, tuple[str, int]]:
    """Return {host port: (host address, container port)} of a resolved service."""
    out = {}
    for spec in service.get("ports", []):
        host, host_port, container = str(spec).split("/")[0].rsplit(":", 2)
        out[int(host_port)] = (host, int(container))
    return out


def _twins(services: dict, name: str) -> dict[str, dict]:
    return {n: s for n, s in services.items() if n == name or n.startswith(f"{name}-")}


def _stack() -> list:
    defaults = Settings()
    return [*all_services(defaults), *cluster_services(defaults)]


def test_every_service_of_sf311_up_has_a_twin_on_the_same_loopback_ports(resolved) -> None:
    services = resolved["services"]
    for svc in _stack():
        twins = _twins(services, svc.name)
        assert twins, f"{svc.name}: no service of that name in docker-compose.yml"
        published = {p: hp for t in twins.values() for p, hp in _published(t).items()}
        expected = {e.port: e.host for e in svc.endpoints()}
        assert set(published) == set(expected), f"{svc.name}: {sorted(published)} != {expected}"
        assert {host for host, _ in published.values()} == {"127.0.0.1"}, svc.name
        # Optional services of `sf311 up` (started by name) sit behind a compose profile.
        for twin in twins.values():
            assert bool(twin.get("profiles")) == svc.optional, svc.name


def test_compose_twins_take_the_same_settings(resolved) -> None:
    defaults = Settings()
    services = resolved["services"]
    owner = urlsplit(defaults.postgres_dsn.get_secret_value())
    pg = services["postgres"]["environment"]
    assert (pg["POSTGRES_USER"], pg["POSTGRES_DB"]) == (owner.username, owner.path.lstrip("/"))
    kafka = services["kafka"]["environment"]
    assert int(kafka["KAFKA_NUM_PARTITIONS"]) == defaults.kafka_partitions
    assert f"CONTROLLER://:{defaults.kafka_controller_port}" in kafka["KAFKA_LISTENERS"]

    airflow = Airflow(defaults)
    for component in airflow.components:
        twin = [s for s in services.values() if s.get("command") == f"airflow {component}"]
        assert len(twin) == 1, f"no compose service runs `airflow {component}`"
        env = twin[0]["environment"]
        assert int(env["AIRFLOW__CORE__PARALLELISM"]) == defaults.airflow_parallelism
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        # The DAGs spark-submit the jobs: Airflow runs from the image that holds Spark.
        assert twin[0]["build"]["target"] == "airflow"

    spark = SparkCluster(defaults)
    workers = {n: s for n, s in services.items() if n.startswith("spark-worker-")}
    assert len(workers) == defaults.spark_cluster_workers
    for worker in workers.values():
        args = worker["command"].split()
        assert args[args.index("--cores") + 1] == str(defaults.spark_worker_cores)
        assert args[args.index("--memory") + 1] == defaults.spark_worker_memory
        assert f"spark-master:{spark.master.port}" in worker["command"]

    # Every container that runs sf311 gets the same SF311_* settings.
    sf311_envs = [
        {k: v for k, v in s["environment"].items() if k.startswith("SF311_")}
        for s in services.values()
        if s.get("image", "").startswith("sf311-")
    ]
    assert len(sf311_envs) >= 6 and all(env == sf311_envs[0] for env in sf311_envs)
    registry = urlsplit(sf311_envs[0]["SF311_SCHEMA_REGISTRY_URL"])
    assert registry.path == urlsplit(defaults.schema_registry_url).path
    assert {"stream", "api", "dashboard"} <= set(services)


def test_every_service_has_a_healthcheck_and_every_dependency_a_condition(resolved) -> None:
    services = resolved["services"]
    one_shot = {n for n, s in services.items() if "healthcheck" not in s}
    assert one_shot == {"init"}, f"services without a healthcheck: {sorted(one_shot)}"
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec.get("condition") == wanted, f"{name} -> {dep}: {spec}"


def test_every_file_the_compose_file_names_exists(resolved) -> None:
    for name, service in resolved["services"].items():
        build = service.get("build")
        if build:
            context = Path(build["context"])
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert context.is_dir() and dockerfile.is_file(), name
            text = dockerfile.read_text()
            stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M | re.I)
            assert build.get("target") in stages, f"{name}: no stage {build.get('target')}"
            for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, flags=re.M):
                for source in sources.split():
                    assert (context / source).exists(), f"{dockerfile}: COPY {source}"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith(("/", ".")):
                assert Path(source).exists(), f"{name}: {source}"


def test_no_secret_is_written_in_the_compose_file() -> None:
    raw = COMPOSE_FILE.read_text()
    # Passwords, keys and secrets are ${VARIABLES} from .env, whose example has every one.
    secret_key = r"^\s*\w*(PASSWORD|SECRET|ACCESS_KEY)\w*:\s*(?!\$\{)\S"
    assert not re.search(secret_key, raw, flags=re.M), "a secret written in the file"
    assert not re.search(r"://[^:/\s]+:(?!\$\{)[^@\s]+@", raw), "a password inside a URL"
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    required = set(re.findall(r"\$\{(\w+):\?", raw))
    assert required and required <= set(example)
    assert all("change-me" in example[name] for name in required)
