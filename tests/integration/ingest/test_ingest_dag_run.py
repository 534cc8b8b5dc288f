"""dag.test() of sf311_ingest in the Airflow virtualenv against the SODA server, Kafka, Postgres."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sf311.ingest.soda_server import Dataset, start_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

RUN = """
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["sf311_ingest"]
run = dag.test(logical_date=pendulum.parse(sys.argv[2]), run_conf=json.loads(sys.argv[3]))
print("STATE", run.state)
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
with create_session() as session:
    for x in session.query(XComModel).filter_by(dag_id="sf311_ingest", run_id=run.run_id):
        print("XCOM", x.task_id, x.key, json.dumps(x.value))
"""


def _dag_test(python: Path, env: dict[str, str], logical_date: str, conf: dict) -> list[list[str]]:
    """Run dag.test() once; return its XCom rows (task, key, JSON value) after asserting success."""
    done = subprocess.run(
        [
            str(python),
            "-c",
            RUN,
            str(ROOT / "dags" / "sf311_ingest.py"),
            logical_date,
            json.dumps(conf),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "STATE success" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    return [line.split(" ", 3)[1:] for line in done.stdout.splitlines() if line.startswith("XCOM")]


def test_dag_run_sends_its_interval_or_its_backfill_window(
    tmp_path: Path, fresh, read_topic
) -> None:
    python = fresh.airflow_venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"Airflow virtualenv not found at {python} (run `make setup`)")
    # The run at 12:00 UTC (after the DAG start_date) covers [11:45, 12:00) UTC,
    # that is [03:45, 04:00) in Los Angeles.
    times = {
        "1": "2026-11-27T03:44:59.000",
        "2": "2026-11-27T03:45:00.000",
        "3": "2026-11-27T03:59:59.000",
        "4": "2026-11-27T04:00:00.000",
    }
    rows = [
        {
            "service_request_id": i,
            "requested_datetime": "2026-11-27T01:00:00.000",
            "updated_datetime": t,
        }
        for i, t in times.items()
    ]
    server = start_server(Dataset(rows), "vw6y-z8j6")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "SF311_SOCRATA_DOMAIN": server.domain,
        "SF311_SOCRATA_SCHEME": "http",
        "SF311_SOCRATA_OVERLAP_SECONDS": "0",
        "SF311_KAFKA_TOPIC": fresh.kafka_topic,
        "SF311_KAFKA_DLQ_TOPIC": fresh.kafka_dlq_topic,
    }
    try:
        migrate = subprocess.run(
            [str(python), "-m", "airflow", "db", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        # The run at 12:00 UTC covers its interval only.
        interval = _dag_test(python, env, "2026-11-27T12:00:00+00:00", {})
        assert sorted(key for key, _ in read_topic(fresh.kafka_topic)) == [b"2", b"3"]
        # A manual run with since/until backfills that window whatever its own interval.
        window = {"since": "2026-11-27T03:44:00", "until": "2026-11-27T04:00:01"}
        backfill = _dag_test(python, env, "2026-11-28T12:00:00+00:00", window)
    finally:
        server.shutdown()
        server.server_close()
    # Only the counts travel through XCom; the records went to Kafka inside the task.
    for xcoms, read in ((interval, 2), (backfill, 4)):
        assert len(xcoms) == 1 and xcoms[0][:2] == ["socrata_to_kafka", "return_value"]
        assert json.loads(xcoms[0][2]) == {
            "read": read,
            "produced": read,
            "dead_lettered": 0,
            "unknown_columns": {},
        }
    keys = sorted(key for key, _ in read_topic(fresh.kafka_topic))
    assert keys == [b"1", b"2", b"2", b"3", b"3", b"4"]
