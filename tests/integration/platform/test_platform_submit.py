"""spark-submit starts from a process whose PATH has another Python first (an Airflow worker)."""

from __future__ import annotations

import subprocess

import pytest

from sf311.settings import Settings
from sf311.submit import spark_submit_env

pytestmark = pytest.mark.integration


def test_spark_submit_finds_spark_home_from_a_foreign_path(settings: Settings, monkeypatch):
    if not settings.spark_submit.exists():
        pytest.skip(f"{settings.spark_submit} not found (run `make setup`)")
    # System Python first, as in the Airflow virtualenv: it has no pyspark.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("SPARK_HOME", raising=False)
    # build_spark exports the project's Python for executors; a foreign process has none.
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    monkeypatch.delenv("PYSPARK_DRIVER_PYTHON", raising=False)
    bare = subprocess.run(
        [str(settings.spark_submit), "--version"], capture_output=True, text=True, timeout=120
    )
    assert bare.returncode != 0 and "SPARK_HOME" in bare.stdout + bare.stderr
    done = subprocess.run(
        [str(settings.spark_submit), "--version"],
        env=spark_submit_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "version 4.2.0" in done.stdout + done.stderr
