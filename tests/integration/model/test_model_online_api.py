"""The API recalibrates its interval from cases closed in a real warehouse (scratch database)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from sf311.model.champion import LoadedModel, ModelService, warehouse_recalibrator
from sf311.serving.api import create_app
from sf311.settings import Settings
from tests.support import scratch
from tests.support.models import paper_scorer

pytestmark = pytest.mark.integration

DB_NAME = "model_online_test"
LA = ZoneInfo("America/Los_Angeles")
# Residuals -1.0 .. 1.0 by 0.05 around the paper model's 3.0: 10 % and 90 % at -0.8 and 0.8.
EVEN = np.linspace(-1.0, 1.0, 41)


def _morning(days_ago: int) -> datetime:
    """Return 10:00 San Francisco time `days_ago` days ago: category B scores raw 3.0 then."""
    day = datetime.now(LA).date() - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, 10, tzinfo=LA)


def _insert(conn: psycopg.Connection, first_id: int, opened: datetime, residuals) -> None:
    rows = []
    for i, r in enumerate(residuals):
        requested = (opened + timedelta(minutes=i)).astimezone(UTC)
        closed = requested + timedelta(hours=math.expm1(3.0 + r))
        rows.append((first_id + i, requested, closed, closed))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO cases (service_request_id, requested_datetime, closed_date,"
            " updated_datetime, service_name, kafka_timestamp, batch_id)"
            " VALUES (%s, %s, %s, %s, 'B', now(), 1)",
            rows,
        )


@pytest.fixture(scope="module")
def warehouse(settings: Settings) -> Iterator[scratch.ScratchDb]:
    """A scratch warehouse: 41 B cases closed days ago, 31 still to close (closed_date ahead),
    one never closed."""
    db = scratch.create(settings, DB_NAME)
    with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
        _insert(conn, 1, _morning(10), EVEN)
        # Opened yesterday, closing about 124 days from now: not known yet, never used.
        _insert(conn, 1000, _morning(1), [5.0] * 30)
        # Opened 5 days ago, still open: one never closed, one closing about 124 days on.
        _insert(conn, 2000, _morning(5), [5.0])
        conn.execute(
            "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
            " service_name, kafka_timestamp, batch_id) VALUES (2001, %s, %s, 'B', now(), 1)",
            (_morning(5) + timedelta(minutes=1),) * 2,
        )
    yield db
    scratch.drop(settings, DB_NAME)


def _online_settings(settings: Settings, analyst_dsn: str, **rule) -> Settings:
    return settings.model_copy(
        update={
            "analyst_dsn": SecretStr(analyst_dsn),
            "model_online_seconds": 3600.0,
            "model_online_min_cases": 20,
            "model_online_window": 200,
            "model_online_level": 0.8,
            "model_online_method": "closures",
            "model_online_adaptive_gamma": 0.0,
            **rule,
        }
    )


def _serve_one(settings: Settings, analyst_dsn: str, **rule) -> tuple[dict, dict]:
    """Return /model's calibration after the first background round, and one /predict answer."""
    local = _online_settings(settings, analyst_dsn, **rule)
    service = ModelService(
        LoadedModel(paper_scorer(["A", "B"]), "7"), recalibrator=warehouse_recalibrator(local)
    )
    case = {"requested_datetime": _morning(0).isoformat(), "service_name": "B"}
    with TestClient(create_app(local, service)) as api:
        # The first round runs at start-up, in the background.
        for _ in range(200):
            calibration = api.get("/model").json()["calibration"]
            if calibration.get("as_of"):
                resp = api.post("/predict", json=case)
                assert resp.status_code == 200
                return calibration, resp.json()
            time.sleep(0.05)
    raise AssertionError("the API never recalibrated")


def test_api_answers_with_the_interval_of_the_closed_cases(settings, warehouse) -> None:
    calibration, body = _serve_one(settings, warehouse.analyst_dsn)
    assert calibration["source"] == "online"
    assert calibration["n_cases"] == 41
    np.testing.assert_allclose(calibration["quantiles"], [-0.8, 0.0, 0.8], atol=1e-9)
    assert body["predicted_hours"] == pytest.approx(math.expm1(3.0))
    assert body["lower_hours"] == pytest.approx(math.expm1(2.2))
    assert body["upper_hours"] == pytest.approx(math.expm1(3.8))


def test_api_answers_with_the_censored_interval_of_the_requests(settings, warehouse) -> None:
    # Requests 2 days old or more: the 41 closed and the 2 opened 5 days ago, still open then
    # 110 hours or more, above every closure (log1p(110) - 3.0 = 1.7): 90 % is the 39th of
    # 43, 0.9.
    calibration, body = _serve_one(
        settings,
        warehouse.analyst_dsn,
        model_online_method="requests",
        model_online_min_age_days=2.0,
    )
    assert (calibration["source"], calibration["method"]) == ("online", "requests")
    assert (calibration["n_cases"], calibration["n_open"]) == (43, 2)
    np.testing.assert_allclose(calibration["quantiles"], [-0.8, 0.0, 0.9], atol=1e-9)
    assert body["upper_hours"] == pytest.approx(math.expm1(3.9))


def test_api_answers_at_the_adaptive_level_of_the_revealed_misses(settings, warehouse) -> None:
    # The last 32 requests: the 2 opened 5 days ago and the 30 opened yesterday. Replayed from
    # 0.8: the 2 are served -/+0.8 on the 41 closures and, still open 43.7 hours on, both miss:
    # 0.8 + 2 x 0.05 x 0.8 = 0.88. The 30 are served -/+0.88: open past their upper end only
    # tomorrow, not revealed yet, and their future closures never count.
    calibration, body = _serve_one(
        settings,
        warehouse.analyst_dsn,
        model_online_adaptive_gamma=0.05,
        model_online_adaptive_horizon=32,
    )
    assert calibration["source"] == "online"
    assert calibration["level"] == pytest.approx(0.88)
    adaptive = calibration["adaptive"]
    assert (adaptive["n_requests"], adaptive["n_revealed"], adaptive["n_missed"]) == (32, 2, 2)
    np.testing.assert_allclose(calibration["quantiles"], [-0.88, 0.0, 0.88], atol=1e-9)
    assert body["upper_hours"] == pytest.approx(math.expm1(3.88))


def test_unreachable_warehouse_keeps_the_training_interval(settings) -> None:
    # Port 1 is privileged and unused here: the connection is refused at once.
    calibration, body = _serve_one(settings, "postgresql://analyst:analyst@127.0.0.1:1/sf311")
    assert calibration["source"] == "training"
    assert "warehouse not readable" in calibration["reason"]
    assert body["upper_hours"] == pytest.approx(math.expm1(4.0))
