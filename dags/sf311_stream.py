"""sf311_stream: Kafka -> bronze/silver Delta -> Postgres as one bounded batch per run.

For deployments that schedule rather than stream: each run migrates the warehouse, then runs
the streaming job with trigger(availableNow=True) through spark-submit; it reads what arrived
since the last run (the checkpoint remembers where it stopped) and exits. Never run it beside
a continuous `sf311 stream` on the same checkpoint: the DAG starts paused for that reason.
Master, jars and Python come from Settings (SF311_SPARK_MASTER=spark://... for a cluster)
through sf311.submit, which says why this is not the Spark provider's SparkSubmitOperator.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

SCHEDULE = "*/30 * * * *"


@dag(
    dag_id="sf311_stream",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    dagrun_timeout=timedelta(minutes=60),
    tags=["sf311", "stream", "spark", "delta", "postgres"],
    default_args={
        "owner": "sf311-data",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(minutes=50),
    },
    doc_md=__doc__,
)
def sf311_stream() -> None:
    @task
    def migrate_warehouse() -> list[str]:
        """Return the SQL migrations applied (none when the schema is current)."""
        from sf311.settings import load_settings
        from sf311.warehouse.migrate import migrate

        return migrate(load_settings().postgres_dsn.get_secret_value())

    @task
    def stream_available_now() -> int:
        """Return spark-submit's exit code after one availableNow run of the streaming job."""
        from sf311.settings import load_settings
        from sf311.submit import run_spark_submit

        return run_spark_submit(load_settings(), "stream", "--once")

    migrate_warehouse() >> stream_available_now()


sf311_stream()
