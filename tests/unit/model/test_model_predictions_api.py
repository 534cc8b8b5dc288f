"""GET /cases/{id}/prediction without a warehouse: its contract in /openapi.json, the refusal
of ids `cases` cannot hold, and 503 when Postgres does not answer."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from sf311.model.champion import LoadedModel, ModelService
from sf311.serving.api import create_app

ROUTE = "/cases/{service_request_id}/prediction"


@pytest.fixture
def client(settings, paper_scorer, tmp_path):
    # Port 1 is privileged and unused here: the connection is refused at once.
    local = settings.model_copy(
        update={
            "analyst_dsn": SecretStr("postgresql://analyst:analyst@127.0.0.1:1/sf311"),
            "model_backtest_file": tmp_path / "absent.json",
        }
    )
    service = ModelService(LoadedModel(paper_scorer, "7"))
    with TestClient(create_app(local, service)) as c:
        yield c


def test_the_route_documents_its_answer_404_and_503(client) -> None:
    doc = client.get("/openapi.json").json()
    answers = doc["paths"][ROUTE]["get"]["responses"]
    assert {"200", "404", "422", "503"} <= set(answers)
    schema = doc["components"]["schemas"]["CasePredictionOut"]
    assert set(schema["required"]) == {
        "service_request_id", "model_version", "predicted_close_at", "lower_at", "upper_at",
        "scored_at", "status",
    }  # fmt: skip
    assert schema["properties"]["status"]["enum"] == ["on_time", "at_risk", "overdue"]


@pytest.mark.parametrize("sid", ["-1", str(2**63), "abc"])
def test_an_id_cases_cannot_hold_is_refused(client, sid) -> None:
    assert client.get(f"/cases/{sid}/prediction").status_code == 422


def test_an_unreachable_warehouse_answers_503(client) -> None:
    resp = client.get("/cases/123/prediction")
    assert resp.status_code == 503
    assert "warehouse unreachable" in resp.json()["detail"]
