"""The streaming and training jobs on a Spark standalone cluster (a master and two workers of 1
core, separate JVMs on loopback) give what local mode gives on the same input: silver, the
quarantine, Postgres `cases` and the model's holdout metrics.

Local mode runs in this process (the session's local[2] Spark); the cluster runs go through
the two doors users have: `spark-submit jobs/stream.py --once` as built by sf311.submit (the
DAGs' and the demo's path) and `sf311 train` (a SparkSession built in-process by build_spark).
Only settings differ between the two, SF311_SPARK_MASTER above all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pyspark.testing import assertDataFrameEqual

from sf311.ingest.generate import write_cases
from sf311.ingest.run import ingest_file
from sf311.lakehouse.silver import LINEAGE_COLUMNS
from sf311.lakehouse.stream import run_stream
from sf311.model.job import split_from_newest
from sf311.model.train import fit_and_evaluate
from sf311.platform.services import SparkCluster
from sf311.settings import PROJECT_ROOT, Settings, load_settings
from sf311.submit import spark_submit_command, spark_submit_env
from sf311.warehouse.migrate import migrate
from tests.integration.stream.stream_support import (
    StreamEnv,
    drop_env,
    make_env,
    make_versions,
    with_search_path,
)

ROWS = 3_000
# Postgres columns a run stamps itself; every other column must match.
PG_RUN_COLUMNS = {"batch_id", "loaded_at"}
SF311 = PROJECT_ROOT / ".venv" / "bin" / "sf311"


@dataclass
class Runs:
    """The local and the cluster run of the streaming job over one topic."""

    local: Settings
    cluster: Settings
    master: str


def _child_env(settings: Settings) -> dict[str, str]:
    """Return the environment of a job process: its SF311_* settings and nothing of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SF311_", "PYSPARK_"))}
    return {**env, **spark_submit_env(settings), **settings.as_env()}


@pytest.fixture(scope="module")
def runs(settings: Settings, spark, cluster: Settings, tmp_path_factory) -> Iterator[Runs]:
    """Generated cases and a few poison messages on the test's topic, streamed to the end once
    in local mode (lake A, schema A) and once on the cluster (lake B, schema B)."""
    tmp = tmp_path_factory.mktemp("cluster-jobs")
    env, schema_a = make_env(settings, tmp / "local", stream_trigger="availableNow")
    schema_b = f"test_cluster_{uuid.uuid4().hex[:10]}"
    owner = settings.postgres_dsn.get_secret_value()
    try:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema_b}")
        migrate(with_search_path(owner, schema_b))
        master = SparkCluster(cluster).url
        on_cluster = load_settings(**{
            **{k.removeprefix("SF311_").lower(): v for k, v in env.env.items()},
            "lake_path": str(tmp / "cluster" / "lake"),
            "checkpoint_path": str(tmp / "cluster" / "checkpoints"),
            "postgres_dsn": with_search_path(owner, schema_b),
            "spark_master": master,
        })  # fmt: skip
        _feed(env, tmp / "cases.jsonl")

        run_stream(spark, env.settings, once=True)
        done = subprocess.run(
            spark_submit_command(on_cluster, "stream", "--once"),
            env=_child_env(on_cluster), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        yield Runs(env.settings, on_cluster, master)
    finally:
        drop_env(settings, env, schema_a)
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema_b} CASCADE")


def _feed(env: StreamEnv, path: Path) -> None:
    """Send ROWS generated cases over a year (through the ingest path) and 3 poison messages."""
    write_cases(path, rows=ROWS, seed=20, days=365)
    counts = ingest_file(env.settings, path, progress=False)
    assert counts.read == ROWS and counts.produced > ROWS * 0.9
    torn = env.frame(make_versions(1, 0, seed=3)[0])[:8]
    env.produce([(None, b"\x7fnot a Confluent frame"), (b"1", b""), (b"2", torn)])


def _delta(spark, settings: Settings, name: str):
    return spark.read.format("delta").load(settings.table_path(name)).drop(*LINEAGE_COLUMNS)


def _pg_rows(settings: Settings) -> list[tuple]:
    with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
        cur = conn.execute("SELECT * FROM cases ORDER BY service_request_id")
        keep = [i for i, d in enumerate(cur.description) if d.name not in PG_RUN_COLUMNS]
        return [tuple(row[i] for i in keep) for row in cur.fetchall()]


def test_stream_once_on_the_cluster_equals_local_mode(spark, runs: Runs) -> None:
    assert runs.cluster.spark_master.startswith("spark://127.0.0.1:")
    silver = _delta(spark, runs.local, "silver.cases")
    assert silver.count() > ROWS * 0.9
    assertDataFrameEqual(_delta(spark, runs.cluster, "silver.cases"), silver)
    quarantine = _delta(spark, runs.local, "silver.cases_quarantine")
    assert quarantine.count() >= 3
    assertDataFrameEqual(_delta(spark, runs.cluster, "silver.cases_quarantine"), quarantine)
    local_rows = _pg_rows(runs.local)
    assert len(local_rows) == silver.count()
    assert _pg_rows(runs.cluster) == local_rows


def test_train_on_the_cluster_gives_the_local_metrics(spark, runs: Runs) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    # Both train on the same silver (the local run's), so only the Spark master differs.
    cases = spark.read.format("delta").load(runs.local.table_path("silver.cases"))
    cfg = split_from_newest(cases, runs.local.model_test_days, runs.local.model_train_days)
    local = fit_and_evaluate(cases, cfg).metrics

    model_name = f"sf311-resolution-test-cluster-{uuid.uuid4().hex[:8]}"
    trained = load_settings(**{
        **{k.removeprefix("SF311_").lower(): v for k, v in runs.cluster.as_env().items()},
        "lake_path": runs.local.lake_root,
        "model_name": model_name,
    })  # fmt: skip
    done = subprocess.run(
        [str(SF311), "train"], env=_child_env(trained), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    try:
        assert printed["metrics"] == pytest.approx(local, rel=1e-9, abs=1e-12)
        mlflow.set_tracking_uri(trained.mlflow_tracking_uri)
        run = MlflowClient().get_run(printed["decision"]["run_id"])
        assert run.data.metrics["mae_log"] == pytest.approx(local["mae_log"], rel=1e-9)
    finally:
        MlflowClient(trained.mlflow_tracking_uri).delete_registered_model(model_name)


def test_executors_run_the_projects_python_whatever_their_path(runs: Runs) -> None:
    # A PATH without the virtualenv, as on a cluster node: `python3` there lacks the project.
    env = {**_child_env(runs.cluster), "PATH": "/usr/bin:/bin"}
    env.pop("PYSPARK_PYTHON")
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.spark_cluster"], env=env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [sys.executable]
