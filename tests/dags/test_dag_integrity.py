"""Every DAG in dags/ loads in the Airflow environment and carries tags, retries and an owner.

Run with the Airflow virtualenv: `.venv-airflow/bin/python -m pytest tests/dags`."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_cleanly(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.dags, f"no DAG found in {DAGS}"


def test_every_dag_has_tags_owner_retries_and_no_catchup(dagbag: DagBag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.catchup is False, f"{dag_id} catches up"
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), f"{dag_id}.{task.task_id}: default owner"
            assert task.retries >= 1, f"{dag_id}.{task.task_id}: no retries"
