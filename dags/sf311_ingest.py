"""sf311_ingest: changed SF 311 cases from Socrata to Kafka, one data interval per run.

A run starts at the earlier of the watermark and its interval (minus overlap): reruns never skip."""

from __future__ import annotations

from datetime import datetime, timedelta

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from sf311.settings import load_settings

SCHEDULE = load_settings().ingest_schedule


def _when(value: str | None) -> datetime | None:
    """Return a run parameter's ISO time, or None when it is unset."""
    return datetime.fromisoformat(value) if value else None


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
    params={
        "since": Param(None, type=["null", "string"], description="backfill from (ISO time)"),
        "until": Param(None, type=["null", "string"], description="backfill until (ISO time)"),
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
        params = context["params"]
        counts = ingest_socrata(
            load_settings(),
            since=_when(params.get("since")) or context.get("data_interval_start"),
            until=_when(params.get("until")) or context.get("data_interval_end"),
        )
        print(counts.summary())
        return counts.as_dict()

    socrata_to_kafka()


sf311_ingest()
