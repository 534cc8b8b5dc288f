"""sf311_ingest: changed SF 311 cases from Socrata to Kafka, one data interval per run.

The task sends the records to Kafka itself (only the counts go through XCom). A run reads
rows updated from the stored watermark (or its interval's start, whichever is earlier, minus
the overlap) up to its interval's end, so rerunning an interval re-sends, never skips; the
downstream MERGE makes the re-sent records harmless.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from sf311.settings import load_settings

SCHEDULE = load_settings().ingest_schedule


@dag(
    dag_id="sf311_ingest",
    # A real interval [previous tick, this tick), not Airflow 3's zero-width cron default.
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=60),
    tags=["sf311", "ingest", "kafka"],
    default_args={
        "owner": "sf311-data",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=45),
    },
    doc_md=__doc__,
)
def sf311_ingest() -> None:
    """One task: this interval's changed cases from Socrata to Kafka."""

    @task(multiple_outputs=False)
    def socrata_to_kafka() -> dict[str, int]:
        """Return the read/produced/dead-lettered counts of this interval's ingest."""
        from sf311.ingest.run import ingest_socrata

        context = get_current_context()
        counts = ingest_socrata(
            load_settings(),
            since=context.get("data_interval_start"),
            until=context.get("data_interval_end"),
        )
        print(counts.summary())
        return counts.as_dict()

    socrata_to_kafka()


sf311_ingest()
