"""The prediction API through FastAPI's TestClient, on the paper model (no Spark, no MLflow)."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

from sf311.model.champion import LoadedModel, ModelService
from sf311.model.scorer import Scorer
from sf311.serving.api import create_app

# 2019-01-15 20:00 in San Francisco (PST): hour 20, so B and unseen categories score 4.0.
CASE = {"requested_datetime": "2019-01-15T20:00:00-08:00", "service_name": "B"}


@pytest.fixture
def service(paper_scorer: Scorer) -> ModelService:
    return ModelService(LoadedModel(paper_scorer, "7", {"metrics": {"mae_log": 1.2}}))


@pytest.fixture
def client(settings, service):
    with TestClient(create_app(settings, service)) as c:
        yield c


def test_predict_one_case(client) -> None:
    resp = client.post("/predict", json=CASE)
    assert resp.status_code == 200
    body = resp.json()
    assert body["model_version"] == "7"
    assert body["predicted_hours"] == pytest.approx(math.expm1(4.0))
    assert body["lower_hours"] == pytest.approx(math.expm1(3.0))
    assert body["upper_hours"] == pytest.approx(math.expm1(5.0))
    assert body["interval"] == 0.8
    assert body["unseen"] == []


def test_naive_time_is_san_francisco_local(client) -> None:
    morning = client.post("/predict", json={**CASE, "requested_datetime": "2019-01-15T09:00:00"})
    # 09:00 local is 17:00 UTC: read as UTC it would be hour 17 and score 4.0.
    assert morning.json()["predicted_hours"] == pytest.approx(math.expm1(3.0))


def test_unknown_category_is_scored_as_unseen(client) -> None:
    resp = client.post("/predict", json={**CASE, "service_name": "Never heard of it"})
    assert resp.status_code == 200
    assert resp.json()["unseen"] == ["service_name"]
    assert resp.json()["predicted_hours"] == pytest.approx(math.expm1(4.0))


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"requested_datetime": "2019-01-15T20:00:00"}, "service_name"),
        ({**CASE, "requested_datetime": "yesterday"}, "requested_datetime"),
        ({**CASE, "lat": 137.0}, "lat"),
        ({**CASE, "supervisor_district": "eleven"}, "supervisor_district"),
        ({**CASE, "service_name": ""}, "service_name"),
    ],
)
def test_invalid_case_answers_422_naming_the_field(client, bad, field) -> None:
    resp = client.post("/predict", json=bad)
    assert resp.status_code == 422
    assert field in {str(part) for err in resp.json()["detail"] for part in err["loc"]}


def test_batch_scores_in_order_and_caps_at_10000(client) -> None:
    cases = [CASE, {**CASE, "service_name": "A"}, {**CASE, "service_name": "??"}]
    resp = client.post("/predict/batch", json={"cases": cases})
    assert resp.status_code == 200
    body = resp.json()
    assert body["model_version"] == "7"
    logs = [math.log1p(p["predicted_hours"]) for p in body["predictions"]]
    assert logs == pytest.approx([4.0, 2.1, 4.0])
    assert client.post("/predict/batch", json={"cases": []}).status_code == 422
    too_many = client.post("/predict/batch", json={"cases": [CASE] * 10_001})
    assert too_many.status_code == 422


def test_health_and_model(client) -> None:
    assert client.get("/health").json() == {"status": "ok", "model_version": "7"}
    assert client.get("/model").json() == {
        "version": "7",
        "metrics": {"mae_log": 1.2},
        "calibration": {"source": "training", "reason": "not recalibrated online yet"},
    }


def test_without_a_model_answers_503_not_500(settings) -> None:
    with TestClient(create_app(settings, ModelService())) as c:
        assert c.get("/health").status_code == 503
        assert c.post("/predict", json=CASE).status_code == 503


def test_refresh_swaps_in_a_new_champion(paper_scorer) -> None:
    versions = iter(["1", "1", "2"])
    loaded: list[str] = []

    def load(version: str) -> LoadedModel:
        loaded.append(version)
        return LoadedModel(paper_scorer, version)

    service = ModelService(probe=lambda: next(versions), loader=load)
    assert service.refresh() is True and service.model.version == "1"
    assert service.refresh() is False
    assert service.refresh() is True and service.model.version == "2"
    assert loaded == ["1", "2"]
