"""sf311_reconcile: daily, one thin task with owner and retries, never catching up.

Run with the Airflow virtualenv: `.venv-airflow/bin/python -m pytest tests/dags`."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "sf311_reconcile.py"


def test_sf311_reconcile_dag_wiring() -> None:
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["sf311_reconcile"]
    assert {"sf311", "reconcile"} <= set(dag.tags)
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    # Daily, at midnight UTC (the timetable may spell @daily as its cron expression).
    assert dag.schedule == "@daily"
    assert dag.timetable.expression in ("@daily", "0 0 * * *")
    assert [t.task_id for t in dag.tasks] == ["reconcile_with_source"]
    task = dag.get_task("reconcile_with_source")
    assert task.owner == "sf311-data"
    assert task.retries >= 1
