"""DAG integrity of dags/sf311_ingest.py, loaded by Airflow in its own virtualenv."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sf311.settings import Settings

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("sf311_ingest")
interval = dag.timetable.infer_manual_data_interval(
    run_after=pendulum.datetime(2026, 11, 28, 11, 52, tz="UTC")) if dag else None
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "catchup": dag.catchup, "tags": sorted(dag.tags), "max_active_runs": dag.max_active_runs,
    "tasks": [[t.task_id, t.owner, t.retries] for t in dag.tasks],
    "interval": [interval.start.isoformat(), interval.end.isoformat()],
}))
"""


def test_ingest_dag_loads_with_owner_retries_tags_and_an_interval(tmp_path: Path) -> None:
    python = Settings().airflow_venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"Airflow virtualenv not found at {python} (run `make setup`)")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "SF311_INGEST_SCHEDULE": "*/15 * * * *",
    }
    done = subprocess.run(
        [str(python), "-c", PROBE, str(ROOT / "dags" / "sf311_ingest.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["errors"] == {} and found["dags"] == ["sf311_ingest"]
    assert found["catchup"] is False and found["max_active_runs"] == 1
    assert {"sf311", "ingest"} <= set(found["tags"])
    assert found["tasks"] == [["socrata_to_kafka", "sf311-data", 3]]
    # The schedule from settings makes real 15-minute data intervals.
    assert found["interval"] == ["2026-11-28T11:30:00+00:00", "2026-11-28T11:45:00+00:00"]
