"""sf311_stream: migrate, then one availableNow run through spark-submit; starts paused.

Run with the Airflow virtualenv: `.venv-airflow/bin/python -m pytest tests/dags`."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "sf311_stream.py"


def test_sf311_stream_dag_wiring() -> None:
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["sf311_stream"]
    assert {"sf311", "stream"} <= set(dag.tags)
    assert dag.max_active_runs == 1
    migrate, stream = dag.get_task("migrate_warehouse"), dag.get_task("stream_available_now")
    assert stream.upstream_task_ids == {"migrate_warehouse"}
    for task in (migrate, stream):
        assert task.owner == "sf311-data"
        assert task.retries >= 1


RECORDER = """#!/bin/sh
# Stands in for spark-submit: records what the task hands it.
printf '%s\\n' "$@" > "$0.argv"
printf '%s\\n' "$PYSPARK_PYTHON" > "$0.python"
"""


def submitted(tmp_path: Path, monkeypatch, dag_id: str, task_id: str) -> tuple[list[str], Path]:
    """Run a DAG task's callable against a spark:// master with a recording spark-submit and
    return the argv it was handed and the jars folder it was given."""
    submit = tmp_path / "spark-submit"
    submit.write_text(RECORDER)
    submit.chmod(0o755)
    jars = tmp_path / "jars"
    jars.mkdir()
    for name in ("delta-spark_4.2_2.13-4.4.0.jar", "postgresql-42.7.14.jar"):
        (jars / name).touch()
    monkeypatch.setenv("SF311_SPARK_MASTER", "spark://127.0.0.1:7077")
    monkeypatch.setenv("SF311_SPARK_SUBMIT", str(submit))
    monkeypatch.setenv("SF311_SPARK_JARS_DIR", str(jars))
    monkeypatch.setenv("SF311_SPARK_PYTHON", "/opt/sf311/bin/python")
    bag = DagBag(dag_folder=str(DAG_FILE.parent / f"{dag_id}.py"))
    assert bag.dags[dag_id].get_task(task_id).python_callable() == 0
    assert (tmp_path / "spark-submit.python").read_text().strip() == "/opt/sf311/bin/python"
    return (tmp_path / "spark-submit.argv").read_text().splitlines(), jars


def test_sf311_stream_submits_to_the_spark_master_of_settings(tmp_path, monkeypatch) -> None:
    argv, jars = submitted(tmp_path, monkeypatch, "sf311_stream", "stream_available_now")
    root = DAG_FILE.parents[1]
    assert argv == [
        "--master", "spark://127.0.0.1:7077",
        "--name", "sf311-stream",
        "--properties-file", str(root / "conf" / "spark-defaults.conf"),
        "--jars", f"{jars}/delta-spark_4.2_2.13-4.4.0.jar,{jars}/postgresql-42.7.14.jar",
        str(root / "jobs" / "stream.py"),
        "--once",
    ]  # fmt: skip
