"""The operations views of migrations 0014 and 0015 and GET /cases/{id}/prediction on a scratch
warehouse: which open case is overdue, at risk or on time, read as the analyst role, and the
case columns each prediction carries following its case."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from sf311.model.champion import LoadedModel, ModelService
from sf311.serving.api import create_app
from sf311.settings import Settings
from sf311.warehouse import predictions as store
from tests.support import scratch
from tests.support.models import paper_scorer

pytestmark = pytest.mark.integration

DB_NAME = "serving_case_prediction_test"
SCORED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# id: (category, neighborhood, closed, deleted, flags, hours from the test's start to upper_at
# or None when not scored)
CASES = {
    1: ("Graffiti", "Mission", False, False, [], -2.0),  # overdue
    2: ("Graffiti", "Mission", False, False, [], 5.0),  # at risk
    3: ("Graffiti", "Mission", False, False, [], 48.0),  # on time
    4: ("Graffiti", "Mission", True, False, [], -2.0),  # closed after it was scored
    5: ("Graffiti", "Mission", False, True, [], -2.0),  # deleted by reconciliation
    6: ("Graffiti", "Mission", False, False, [], None),  # open, not scored yet
    7: ("Graffiti", "Mission", False, False, ["closed_date_invalid"], -2.0),  # closed, no date
    8: ("Encampments", None, False, False, [], 30.0),  # on time, another group
}


@pytest.fixture(scope="module")
def warehouse(settings: Settings) -> Iterator[tuple[scratch.ScratchDb, datetime]]:
    db = scratch.create(settings, DB_NAME)
    start = datetime.now(UTC)
    # Opened three days before the fixture runs, not before collection: ages are asserted.
    opened = start - timedelta(days=3)
    with psycopg.connect(db.owner_dsn, autocommit=True) as conn:
        # Every case lands open and is scored by the keeper's writer; then the closings,
        # deletions and flags arrive as the warehouse load and reconciliation write them.
        for sid, (category, hood, *_) in CASES.items():
            conn.execute(
                "INSERT INTO cases (service_request_id, requested_datetime, updated_datetime,"
                " service_name, neighborhood, kafka_timestamp, batch_id)"
                " VALUES (%s, %s, %s, %s, %s, now(), 0)",
                [sid, opened, opened, category, hood],
            )
        rows = [
            (sid, "v1", at - timedelta(hours=10), at - timedelta(hours=20), at)
            for sid, (*_, upper) in CASES.items()
            if upper is not None
            for at in [start + timedelta(hours=upper)]
        ]
        with conn.transaction():
            assert store.upsert_predictions(conn, rows, SCORED) == 7
        for sid, (_, _, closed, deleted, flags, _) in CASES.items():
            conn.execute(
                "UPDATE cases SET closed_date = %s, deleted_at = %s, quality_flags = %s"
                " WHERE service_request_id = %s",
                [opened + timedelta(hours=1) if closed else None, start if deleted else None,
                 flags, sid],
            )  # fmt: skip
    yield db, start
    scratch.drop(settings, DB_NAME)


def test_views_sort_open_cases_by_their_upper_end(warehouse) -> None:
    db, start = warehouse
    with psycopg.connect(db.analyst_dsn, autocommit=True) as conn:
        status = dict(conn.execute("SELECT service_request_id, status FROM open_case_status"))
        overdue = conn.execute(
            "SELECT service_request_id, hours_late FROM overdue_cases"
        ).fetchall()
        at_risk = conn.execute(
            "SELECT service_request_id, hours_left FROM at_risk_cases"
        ).fetchall()
        groups = conn.execute(
            "SELECT category, neighborhood, overdue, at_risk, open"
            " FROM overdue_by_category_neighborhood ORDER BY 1"
        ).fetchall()
        ages = conn.execute("SELECT min(age_hours), max(age_hours) FROM overdue_cases").fetchone()
    elapsed = (datetime.now(UTC) - start).total_seconds() / 3600
    assert status == {1: "overdue", 2: "at_risk", 3: "on_time", 8: "on_time"}
    assert [r[0] for r in overdue] == [1]
    assert 2.0 <= overdue[0][1] <= 2.0 + elapsed
    assert [r[0] for r in at_risk] == [2]
    assert 5.0 - elapsed <= at_risk[0][1] <= 5.0
    # Open counts every open case, scored or not; closed and deleted ones are no backlog.
    assert groups == [("Encampments", None, 0, 0, 1), ("Graffiti", "Mission", 1, 1, 4)]
    assert 72.0 <= ages[0] <= ages[1] <= 72.0 + elapsed + 0.01


def test_a_prediction_follows_its_case_and_never_outlives_it(warehouse) -> None:
    db, start = warehouse
    with psycopg.connect(db.owner_dsn) as conn:  # one transaction, rolled back at the end
        conn.execute(
            "UPDATE cases SET service_name = 'Encampments', neighborhood = 'SoMa', lat = 37.77,"
            " long = -122.41 WHERE service_request_id = 3"
        )
        copies = "SELECT category, neighborhood, lat, long FROM open_case_status"
        one = " WHERE service_request_id = 3"
        assert conn.execute(copies + one).fetchone() == ("Encampments", "SoMa", 37.77, -122.41)
        conn.execute(
            "UPDATE cases SET quality_flags = ARRAY['location_outside_sf']"
            " WHERE service_request_id = 3"
        )
        assert conn.execute(copies + one).fetchone() == ("Encampments", "SoMa", None, None)
        # The keeper scoring a case that closed meanwhile writes nothing for it.
        assert store.upsert_predictions(conn, [(4, "v2", start, start, start)], SCORED) == 0
        assert conn.execute(copies + " WHERE service_request_id = 4").fetchone() is None
        # The highest id stored (8) is deleted like any other; ids above it hold nothing.
        assert store.delete_predictions(conn, [10**12, 8, 9]) == 1
        assert store.delete_predictions(conn, [8]) == 0
        assert conn.execute(copies + " WHERE service_request_id = 8").fetchone() is None
        conn.rollback()


def test_the_analyst_reads_predictions_but_cannot_write_them(warehouse) -> None:
    db, _ = warehouse
    with psycopg.connect(db.analyst_dsn, autocommit=True) as conn:
        # The closed, deleted and invalid-closed cases lost their rows when they stopped being open.
        assert conn.execute("SELECT count(*) FROM case_predictions").fetchone()[0] == 4
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM case_predictions")


def test_the_api_answers_the_stored_prediction_or_404(settings, warehouse) -> None:
    db, start = warehouse
    local = settings.model_copy(update={"analyst_dsn": SecretStr(db.analyst_dsn)})
    service = ModelService(LoadedModel(paper_scorer(["A", "B"]), "7"))
    with TestClient(create_app(local, service)) as api:
        resp = api.get("/cases/2/prediction")
        assert resp.status_code == 200
        body = resp.json()
        upper = start + timedelta(hours=5)
        assert body["service_request_id"] == 2 and body["model_version"] == "v1"
        assert body["status"] == "at_risk"
        assert datetime.fromisoformat(body["upper_at"]) == upper
        assert datetime.fromisoformat(body["lower_at"]) == upper - timedelta(hours=20)
        assert datetime.fromisoformat(body["predicted_close_at"]) == upper - timedelta(hours=10)
        assert datetime.fromisoformat(body["scored_at"]) == SCORED
        assert api.get("/cases/1/prediction").json()["status"] == "overdue"
        # Closed, deleted, unscored and unknown cases have no stored prediction to answer with.
        for sid in (4, 5, 6, 7, 999):
            resp = api.get(f"/cases/{sid}/prediction")
            assert resp.status_code == 404, sid
            assert str(sid) in resp.json()["detail"]
