"""A throwaway warehouse database `dashboard_test` holding known cases, gold tables and case
predictions filled from them as fixture data, and the app's env."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
import streamlit as st

from sf311.settings import Settings
from tests.support import scratch
from tests.support.dashboard_server import fill_gold

LA = ZoneInfo("America/Los_Angeles")
DB_NAME = "dashboard_test"
CATEGORIES = {
    "Street and Sidewalk Cleaning": ("Bulky Items", "General Cleaning"),
    "Graffiti": ("Graffiti on Building", "Graffiti on Pole"),
    "Parking Enforcement": ("Blocked Driveway",),
    "Tree Maintenance": ("Trim Request", "Fallen Tree"),
}
NEIGHBORHOODS = {
    "Mission": (37.760, -122.415),
    "North Beach": (37.800, -122.410),
    "Sunset": (37.750, -122.490),
    "Tenderloin": (37.783, -122.414),
    "Bayview": (37.730, -122.390),
}
SOURCES = ("Phone", "Mobile/Open311", "Web", "Integrated Agency")


def known_cases() -> list[dict]:
    """Return 160 seeded cases opened 2024-01-10 .. 2024-03-30 (SF time), with edge cases."""
    rng = random.Random(311)
    first = datetime(2024, 1, 10, tzinfo=LA)
    span = (datetime(2024, 3, 30, 20, tzinfo=LA) - first).total_seconds()
    names = list(NEIGHBORHOODS)
    rows = []
    for i in range(160):
        category = rng.choice(list(CATEGORIES))
        neighborhood = rng.choice(names)
        lat, long = NEIGHBORHOODS[neighborhood]
        requested = first + timedelta(seconds=rng.uniform(0, span))
        closed = None
        if rng.random() < 0.75:
            closed = requested + timedelta(hours=rng.choice((0.5, 3, 20, 70, 300, 900)))
        rows.append(
            {
                "service_request_id": 1000 + i,
                "requested_datetime": requested.astimezone(UTC),
                "closed_date": closed.astimezone(UTC) if closed else None,
                "service_name": category,
                "service_subtype": rng.choice(CATEGORIES[category]),
                "agency_responsible": f"{category} Agency",
                "neighborhood": neighborhood,
                "supervisor_district": 1 + names.index(neighborhood),
                "police_district": neighborhood.upper(),
                "source": rng.choice(SOURCES),
                "lat": lat + rng.uniform(-0.004, 0.004),
                "long": long + rng.uniform(-0.004, 0.004),
            }
        )
    # The real data's quirks: a case that closes before it opens, one without a location,
    # and one opened on the last day (so the default range ends on 2024-03-30).
    rows[0]["requested_datetime"] = datetime(2024, 3, 10, 12, tzinfo=LA).astimezone(UTC)
    rows[0]["closed_date"] = rows[0]["requested_datetime"] - timedelta(hours=2)
    rows[1]["lat"], rows[1]["long"] = None, None
    rows[2]["requested_datetime"] = datetime(2024, 3, 30, 21, 30, tzinfo=LA).astimezone(UTC)
    rows[2]["closed_date"] = None
    for i, row in enumerate(rows):
        closed = row["closed_date"]
        row["status_description"] = "Open" if closed is None else "Closed"
        row["resolution_hours"] = (
            None if closed is None else (closed - row["requested_datetime"]).total_seconds() / 3600
        )
        # As the pipeline loads them: every 7th closure a duplicate, impossible values flagged.
        row["closure_kind"] = (
            "unknown" if closed is None else ("duplicate" if i % 7 == 3 else "resolved")
        )
        row["quality_flags"] = []
    rows[0]["resolution_hours"], rows[0]["quality_flags"] = None, ["closed_before_opened"]
    rows[1]["quality_flags"] = ["location_missing"]
    return rows


@pytest.fixture(scope="session")
def cases() -> list[dict]:
    """The known cases loaded into the test warehouse."""
    return known_cases()


@pytest.fixture(scope="session")
def dashboard_db(settings: Settings, cases: list[dict]) -> Iterator[scratch.ScratchDb]:
    """Database `dashboard_test` with the warehouse schema, the known cases, one batch, and gold
    and case predictions filled from the cases (fixture data, see fill_gold)."""
    db = scratch.create(settings, DB_NAME)
    columns = list(cases[0])
    with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO cases ({', '.join(columns)}, updated_datetime, kafka_timestamp,"
                f" batch_id) VALUES ({', '.join(['%s'] * len(columns))}, now(), now(), 1)",
                [[row[c] for c in columns] for row in cases],
            )
        conn.execute(
            "INSERT INTO stream_batches (query_id, batch_id, rows_in, rows_valid,"
            " rows_quarantined, rows_curated, rows_upserted, lag_p50_seconds, lag_p95_seconds,"
            " started_at, committed_at) VALUES"
            " ('q', 1, 500, 498, 2, 498, 498, 1.5, 4.0, now() - interval '100 seconds',"
            "  now() - interval '90 seconds')"
        )
    fill_gold(db.owner_dsn)
    yield db
    scratch.drop(settings, DB_NAME)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Return a function giving a TCP port on 127.0.0.1 that nothing listens on right now."""
    return _free_port


@pytest.fixture
def app_env(dashboard_db: scratch.ScratchDb, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the dashboard at the test warehouse and at a closed API port; clear its caches."""
    env = {
        "SF311_ANALYST_DSN": dashboard_db.analyst_dsn,
        "SF311_API_URL": f"http://127.0.0.1:{_free_port()}",
        "SF311_DASHBOARD_TILES": "none",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    st.cache_data.clear()
    return env
