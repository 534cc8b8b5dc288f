"""A child `streamlit run` serving the dashboard, and the gold and prediction fixture data it
reads in a scratch warehouse, for the end-to-end test, the page tests and the benchmark."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg

from sf311.dashboard.serve import APP, command


@contextlib.contextmanager
def serving(
    env: Mapping[str, str],
    port: int,
    log: Path | None = None,
    timeout: float = 60.0,
    app: Path = APP,
) -> Iterator[str]:
    """Yield the URL of a child `streamlit run` serving the dashboard once it answers health.

    The child gets `env` as its whole environment and writes to `log` (else nowhere); it is
    stopped on exit. Raises RuntimeError, with the log's tail, when it does not come up.
    """
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w")) if log else subprocess.DEVNULL
        server = subprocess.Popen(command(port, app=app), env=dict(env), stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).close()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if server.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text()[-2000:] if log else ""
                        raise RuntimeError(f"streamlit did not start: {tail}") from None
                    time.sleep(0.3)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=20)


# Fixture data only: the gold tables and case predictions the dashboard reads, filled from a
# scratch warehouse's `cases` by SQL written here from the contracts (migrations 0013_gold.sql,
# 0014_case_predictions.sql, 0015_open_case_copies.sql, 0021_overdue_history.sql), independent
# of the gold job and of the scorer.
SF_DAY = "((%s) AT TIME ZONE 'America/Los_Angeles')::date"
FILL_GOLD = f"""
TRUNCATE gold.daily_volume, gold.backlog_daily, gold.resolution_stats, gold.sla_daily,
    case_predictions, overdue_history;
INSERT INTO gold.daily_volume
SELECT day, service_name, neighborhood, supervisor_district, police_district, source,
    sum(opened), sum(closed)
FROM (
    SELECT {SF_DAY % "requested_datetime"} AS day, service_name, neighborhood,
        supervisor_district, police_district, source, 1 AS opened, 0 AS closed FROM cases
    UNION ALL
    SELECT {SF_DAY % "closed_date"}, service_name, neighborhood, supervisor_district,
        police_district, source, 0, 1 FROM cases WHERE closed_date IS NOT NULL
) events GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO gold.backlog_daily
SELECT day, service_name,
    CASE WHEN cut - requested_datetime < interval '1 day' THEN '0-1 d'
         WHEN cut - requested_datetime < interval '7 days' THEN '1-7 d'
         WHEN cut - requested_datetime < interval '30 days' THEN '7-30 d'
         WHEN cut - requested_datetime < interval '90 days' THEN '30-90 d'
         ELSE '90+ d' END,
    count(*)
FROM (
    SELECT d::date AS day, (d::date + 1)::timestamp AT TIME ZONE 'America/Los_Angeles' AS cut
    FROM generate_series(
        (SELECT min({SF_DAY % "requested_datetime"}) FROM cases),
        (SELECT max({SF_DAY % "requested_datetime"}) FROM cases), interval '1 day') d
) days
JOIN cases ON requested_datetime < cut AND (closed_date IS NULL OR closed_date > cut)
GROUP BY 1, 2, 3;
INSERT INTO gold.resolution_stats
SELECT date_trunc('month', closed_date AT TIME ZONE 'America/Los_Angeles')::date,
    service_name, neighborhood, count(*),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_hours),
    percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_hours)
FROM cases
WHERE closure_kind = 'resolved' AND resolution_hours >= 0
    AND NOT quality_flags && ARRAY['closed_before_opened', 'closed_date_invalid']
GROUP BY 1, 2, 3;
INSERT INTO gold.sla_daily
SELECT day, service_name, agency_responsible, %(target)s, count(*),
    count(*) FILTER (WHERE due IS NOT NULL AND closed_date <= due),
    count(*) FILTER (WHERE closed_date > due OR (closed_date IS NULL AND now() > due)),
    count(*) FILTER (WHERE closed_date IS NULL AND now() <= due),
    count(*) FILTER (WHERE closed_date <= due)::float8
        / nullif(count(*) FILTER (WHERE closed_date IS NOT NULL OR now() > due), 0)
FROM (
    SELECT {SF_DAY % "requested_datetime"} AS day, service_name, agency_responsible,
        closed_date, requested_datetime + %(target)s * interval '1 hour' AS due
    FROM cases
) c GROUP BY 1, 2, 3;
INSERT INTO case_predictions (service_request_id, model_version, predicted_close_at, lower_at,
    upper_at, scored_at, category, service_subtype, neighborhood, supervisor_district,
    police_district, source, requested_datetime, lat, long)
SELECT service_request_id, 'fixture',
    now() + (ARRAY[-20, 5, 80])[1 + mod(service_request_id, 3)] * interval '1 hour',
    now() + (ARRAY[-40, -5, 40])[1 + mod(service_request_id, 3)] * interval '1 hour',
    now() + (ARRAY[-10, 10, 100])[1 + mod(service_request_id, 3)] * interval '1 hour',
    now(), category, service_subtype, neighborhood, supervisor_district, police_district,
    source, requested_datetime, lat, long
FROM open_cases;
-- Today's statuses as if recorded today and on every day that holds a case: a history in any
-- range, the README's last 30 days included.
INSERT INTO overdue_history
SELECT d.day, s.category, count(*) FILTER (WHERE s.status = 'overdue'),
    count(*) FILTER (WHERE s.status = 'at_risk'), count(*) FILTER (WHERE s.status = 'on_time'),
    now()
FROM (SELECT {SF_DAY % "requested_datetime"} AS day FROM cases UNION SELECT {SF_DAY % "now()"}) d
CROSS JOIN open_case_status s
GROUP BY 1, 2;
"""
# The SLA target of every category in the fixture, in hours.
FIXTURE_TARGET_HOURS = 72.0
# Status of an open case in the fixture, by service_request_id mod 3.
FIXTURE_STATUS = ("overdue", "at_risk", "on_time")


def fill_gold(owner_dsn: str) -> None:
    """Fill the gold tables and case_predictions of a scratch warehouse from its `cases`."""
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        for statement in FILL_GOLD.split(";\n"):
            if statement.strip():
                params = {"target": FIXTURE_TARGET_HOURS} if "%(target)s" in statement else None
                conn.execute(statement, params)
        conn.execute("ANALYZE")
