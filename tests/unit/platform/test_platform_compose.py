"""docker-compose.yml agrees with Settings: the same variables and the same ports."""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

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
        published = {int(str(p).split(":")[0]) for p in services[name].get("ports", [])}
        assert port in published, f"{name}: compose publishes {published}, Settings uses {port}"
