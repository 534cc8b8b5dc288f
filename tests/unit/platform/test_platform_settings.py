"""Settings: defaults, environment overrides, clear errors, masked secrets."""

from __future__ import annotations

import json

import pytest

from sf311.cli import main
from sf311.settings import Settings, SettingsError, load_settings


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF311_SPARK_MASTER", "spark://cluster:7077")
    monkeypatch.setenv("SF311_KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    monkeypatch.setenv("SF311_LAKE_PATH", "s3a://bucket/lake")
    settings = load_settings()
    assert settings.spark_master == "spark://cluster:7077"
    assert settings.kafka_bootstrap_servers == "b1:9092,b2:9092"
    assert settings.table_path("silver.cases") == "s3a://bucket/lake/silver/cases"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SF311_SPARK_MASTER", "localhost"),
        ("SF311_KAFKA_BOOTSTRAP_SERVERS", "no-port"),
        ("SF311_POSTGRES_DSN", "mysql://u:p@h/db"),
        ("SF311_API_PORT", "seventy"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_config_prints_json_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SF311_POSTGRES_DSN", "postgresql://owner:s3cret@db:5432/sf311")
    monkeypatch.setenv("SF311_SOCRATA_APP_TOKEN", "tok-123")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    resolved = json.loads(out)
    assert resolved["postgres_dsn"] == "postgresql://owner:***@db:5432/sf311"
    assert resolved["socrata_app_token"] == "***"
    assert "s3cret" not in out and "tok-123" not in out


def test_config_exits_2_on_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SF311_KAFKA_PARTITIONS", "0")
    assert main(["config"]) == 2
    assert "SF311_KAFKA_PARTITIONS" in capsys.readouterr().err


def test_as_env_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(postgres_dsn="postgresql://a:b@h:1/d", kafka_partitions=3)
    for key, value in original.as_env().items():
        monkeypatch.setenv(key, value)
    rebuilt = load_settings()
    assert rebuilt.postgres_dsn.get_secret_value() == "postgresql://a:b@h:1/d"
    assert rebuilt.kafka_partitions == 3
    assert rebuilt.masked() == original.masked()
