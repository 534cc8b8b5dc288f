"""sf311_train: weekly retraining of the resolution-time model through spark-submit.

The job trains on silver.cases, logs the run to MLflow, registers a new version of
sf311-resolution and moves the `champion` alias only when it beats the current champion on the
same holdout; the API picks the new champion up without a restart. Master, jars and Python
come from Settings through sf311.submit, as for sf311_stream.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

SCHEDULE = "@weekly"


@dag(
    dag_id="sf311_train",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    tags=["sf311", "model", "spark", "mlflow"],
    default_args={
        "owner": "sf311-data",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(minutes=90),
    },
    doc_md=__doc__,
)
def sf311_train() -> None:
    @task
    def train_and_register() -> int:
        """Return spark-submit's exit code after one run of jobs/train.py."""
        from sf311.settings import load_settings
        from sf311.submit import run_spark_submit

        return run_spark_submit(load_settings(), "train")

    train_and_register()


sf311_train()
