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
