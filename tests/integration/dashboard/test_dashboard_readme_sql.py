"""The README's SQL examples run as the analyst on a warehouse holding cases, gold and
predictions, and those the fixture data can answer return rows: a renamed view or column, or a
missing grant, fails here, not in a user's hands."""

from __future__ import annotations

import psycopg

from bench.dashboard import README, readme_statements
from tests.support import scratch

# Examples whose answer depends on the clock or on data the fixture does not hold.
MAY_BE_EMPTY = {
    "Last week's volume of the five busiest categories, from gold.",
    "Backlog history by age, last 90 days",
    "SLA by agency, last 90 days",
    "What turns overdue in the next 24 hours, soonest first.",
    "Opened and closed per day for one category",
    "Monthly resolution times per neighborhood (a percentile of several rows is not their mean:",
    "Median and p90 hours to close street cleaning, by neighborhood.",
    "What gold reflects",  # the fixture fills gold's tables, not the job's progress row
    "Where the late cases are.",  # needs 20 open cases in one category and neighborhood
}


def test_every_readme_query_runs_as_the_analyst(dashboard_db: scratch.ScratchDb) -> None:
    statements = readme_statements(README.read_text())
    assert len(statements) >= 12
    empty = []
    with psycopg.connect(dashboard_db.analyst_dsn, autocommit=True) as conn:
        for title, statement in statements:
            if not conn.execute(statement).fetchall():
                empty.append(title)
    assert set(empty) <= MAY_BE_EMPTY, empty
