"""Secrets: generated into private files, passed by environment rather than argv, one MLflow
login per process; the Spark driver and Airflow's scheduler keep to loopback."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from sf311.credentials import MLFLOW_READER, generated_secret, mlflow_login, secrets_dir
from sf311.platform.apps import Api
from sf311.platform.services import Airflow, Mlflow, dsn_parts
from sf311.settings import Settings
from sf311.spark import read_spark_conf


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_a_generated_secret_is_private_and_stable(settings: Settings, tmp_path: Path) -> None:
    local = settings.model_copy(update={"state_dir": tmp_path})
    first = generated_secret(local, "key")
    assert len(first) >= 24
    assert generated_secret(local, "key") == first
    assert generated_secret(local, "other") != first
    assert (_mode(secrets_dir(local)), _mode(secrets_dir(local) / "key")) == ("0o700", "0o600")


def test_the_mlflow_login_is_the_settings_password_else_the_users_generated_one(
    settings: Settings, tmp_path: Path
) -> None:
    local = settings.model_copy(update={"state_dir": tmp_path, "mlflow_password": None})
    reader = local.model_copy(update={"mlflow_username": MLFLOW_READER})
    assert mlflow_login(local) == ("sf311", generated_secret(local, "mlflow-sf311"))
    assert mlflow_login(reader) == (MLFLOW_READER, generated_secret(local, "mlflow-sf311-reader"))
    given = local.model_copy(update={"mlflow_password": SecretStr("from-a-vault")})
    assert mlflow_login(given) == ("sf311", "from-a-vault")


def test_mlflow_gets_its_secrets_by_environment_and_runs_the_auth_app(
    settings: Settings, tmp_path: Path
) -> None:
    local = settings.model_copy(update={"state_dir": tmp_path, "mlflow_password": None})
    mlflow = Mlflow(local)
    mlflow.prepare()
    (launch,) = mlflow.launches()
    password = dsn_parts(local.mlflow_backend_dsn.get_secret_value())[3]
    assert not any(password in arg for arg in launch.argv)
    assert launch.argv[launch.argv.index("--app-name") + 1] == "basic-auth"
    assert launch.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == mlflow_login(local)[1]
    assert f":{password}@" in launch.env["MLFLOW_BACKEND_STORE_URI"]
    assert _mode(mlflow.auth_config) == "0o600"
    assert "default_permission = READ" in mlflow.auth_config.read_text()


def test_the_api_logs_in_to_mlflow_as_the_reader(settings: Settings) -> None:
    given = settings.model_copy(update={"mlflow_password": SecretStr("writer-only")})
    (launch,) = Api(given).launches()
    assert launch.env["SF311_MLFLOW_USERNAME"] == MLFLOW_READER
    assert "SF311_MLFLOW_PASSWORD" not in launch.env


def test_a_world_readable_airflow_password_is_replaced_by_a_private_one(
    settings: Settings, tmp_path: Path
) -> None:
    airflow = Airflow(settings.model_copy(update={"state_dir": tmp_path}))
    airflow.home.mkdir(parents=True)
    airflow.password_file.write_text(json.dumps({"admin": "leaked-in-a-log"}))
    airflow.password_file.chmod(0o644)
    airflow._admin_password()
    fresh = airflow.admin_password()
    assert fresh != "leaked-in-a-log" and _mode(airflow.password_file) == "0o600"
    airflow._admin_password()
    assert airflow.admin_password() == fresh


def test_the_scheduler_serves_no_logs_on_every_interface(settings: Settings) -> None:
    scheduler = next(x for x in Airflow(settings).launches() if x.name == "airflow-scheduler")
    assert "--skip-serve-logs" in scheduler.argv


def test_the_spark_driver_binds_loopback(settings: Settings) -> None:
    conf = read_spark_conf(settings.conf_dir / "spark-defaults.conf")
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
