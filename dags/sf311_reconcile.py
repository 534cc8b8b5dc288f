"""sf311_reconcile: once a day, the warehouse's cases against the Socrata source.

Per San Francisco day of the last SF311_RECONCILE_WINDOW_DAYS (90), the count and id sum of the
cases in Postgres against the source's; for days that differ, ids missing here go to Kafka again
through the ordinary ingest path, ids gone from the source get `cases.deleted_at` and a tombstone
on the cases topic (silver marks them, gold leaves them out), ids back at the source lose it. Each
run is a row of `reconcile_runs`; a run that would mark more than
SF311_RECONCILE_MAX_DELETED_SHARE of the window deleted does nothing and fails.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

SCHEDULE = "@daily"


@dag(
    dag_id="sf311_reconcile",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    tags=["sf311", "reconcile", "socrata", "postgres"],
    default_args={
        "owner": "sf311-data",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=90),
    },
    doc_md=__doc__,
)
def sf311_reconcile() -> None:
    @task
    def reconcile_with_source() -> str:
        """Return the run's summary line (counts of days compared, differing and ids handled)."""
        from sf311.settings import load_settings
        from sf311.warehouse.reconcile import reconcile

        summary = reconcile(load_settings()).summary()
        print(summary)
        return summary

    reconcile_with_source()


sf311_reconcile()
