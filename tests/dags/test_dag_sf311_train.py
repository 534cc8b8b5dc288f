"""sf311_train: weekly, thin, one spark-submit task with owner and retries.

Run with the Airflow virtualenv: `.venv-airflow/bin/python -m pytest tests/dags`."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "sf311_train.py"


def test_sf311_train_dag_wiring() -> None:
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["sf311_train"]
    assert {"sf311", "model"} <= set(dag.tags)
    assert dag.max_active_runs == 1
    task = dag.get_task("train_and_register")
    assert task.owner == "sf311-data"
    assert task.retries >= 1


def test_sf311_train_submits_to_the_spark_master_of_settings(tmp_path, monkeypatch) -> None:
    from tests.dags.test_dag_sf311_stream import submitted

    argv, jars = submitted(tmp_path, monkeypatch, "sf311_train", "train_and_register")
    assert argv[:4] == ["--master", "spark://127.0.0.1:7077", "--name", "sf311-train"]
    assert argv[-1] == str(DAG_FILE.parents[1] / "jobs" / "train.py")
    assert argv[argv.index("--jars") + 1].split(",") == sorted(str(j) for j in jars.iterdir())
