"""The prediction API through FastAPI's TestClient, on the paper model (no Spark, no MLflow)."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from sf311.model.champion import LoadedModel, ModelService
from sf311.model.scorer import Scorer
from sf311.serving.api import create_app
from sf311.serving.body import MAX_BODY_BYTES

# 2019-01-15 20:00 in San Francisco (PST): hour 20, so B and unseen categories score 4.0.
CASE = {"requested_datetime": "2019-01-15T20:00:00-08:00", "service_name": "B"}


@pytest.fixture
def service(paper_scorer: Scorer) -> ModelService:
    return ModelService(LoadedModel(paper_scorer, "7", {"metrics": {"mae_log": 1.2}}))


@pytest.fixture
def client(settings, service, tmp_path):
    # No backtest results here: GET /model then says so with null.
    local = settings.model_copy(update={"model_backtest_file": tmp_path / "absent.json"})
    with TestClient(create_app(local, service)) as c:
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
    assert resp.json()["fallbacks"] == {"service_name": "unseen level"}
    assert resp.json()["predicted_hours"] == pytest.approx(math.expm1(4.0))


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"requested_datetime": "2019-01-15T20:00:00"}, "service_name"),
        ({**CASE, "requested_datetime": "yesterday"}, "requested_datetime"),
        ({**CASE, "lat": 137.0}, "lat"),
        ({**CASE, "supervisor_district": "eleven"}, "supervisor_district"),
        ({**CASE, "service_name": ""}, "service_name"),
        ({**CASE, "long": False}, "long"),
        ({**CASE, "lat": "37.77"}, "lat"),
        ({**CASE, "lat": float("nan")}, "lat"),
        ({**CASE, "long": float("-inf")}, "long"),
        ({**CASE, "supervisor_district": True}, "supervisor_district"),
        ({**CASE, "supervisor_district": 6.5}, "supervisor_district"),
        ({**CASE, "requested_datetime": "0001-01-01T00:00:00Z"}, "requested_datetime"),
        ({**CASE, "requested_datetime": "1999-12-31T23:59:59-08:00"}, "requested_datetime"),
        ({**CASE, "requested_datetime": "2101-01-01T00:00:00"}, "requested_datetime"),
        ({**CASE, "requested_datetime": "2019-02-29T10:00:00"}, "requested_datetime"),
        ({**CASE, "requested_datetime": "2019-01-15"}, "requested_datetime"),
        ({**CASE, "requested_datetime": "1547611200"}, "requested_datetime"),
        ({**CASE, "requested_datetime": 1547611200}, "requested_datetime"),
    ],
)
def test_invalid_case_answers_422_naming_the_field(client, bad, field) -> None:
    # json.dumps writes NaN and -Infinity as Python's json.loads (and so Starlette) reads them.
    body = json.dumps(bad).encode()
    resp = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    errors = resp.json()["detail"]
    assert [err["loc"] for err in errors] == [["body", field]]
    assert errors[0]["msg"]


def test_invalid_case_in_a_batch_is_named_by_its_position(client) -> None:
    resp = client.post("/predict/batch", json={"cases": [CASE, {**CASE, "long": False}]})
    assert resp.status_code == 422
    assert [err["loc"] for err in resp.json()["detail"]] == [["body", "cases", 1, "long"]]


@pytest.mark.parametrize(
    "when, hours",
    [
        ("2000-01-01T20:00:00Z", 3.0),  # 12:00 in San Francisco
        ("2100-12-31T20:00:00-08:00", 4.0),
        ("2016-02-29T09:30", 3.0),
        ("2019-01-15t20:00:00.123456789-0800", 4.0),
    ],
)
def test_edge_years_and_iso_forms_are_scored(client, when, hours) -> None:
    resp = client.post(
        "/predict", json={**CASE, "requested_datetime": when, "lat": 37, "long": -122.4}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["predicted_hours"] == pytest.approx(math.expm1(hours))


def test_integral_district_and_null_coordinates_are_accepted(client) -> None:
    case = {**CASE, "supervisor_district": 6.0, "lat": None, "long": None}
    assert client.post("/predict", json=case).status_code == 200


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("body", [b'{"requested_datetime": "2019-', b"\x80\x81", b"not json"])
def test_malformed_json_answers_400(client, path, body) -> None:
    resp = client.post(path, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert isinstance(resp.json()["detail"], str) and resp.json()["detail"]


def test_oversized_body_answers_413_before_parsing(client) -> None:
    # Not JSON at all: a 400 would mean the body was read and parsed.
    body = b"x" * (MAX_BODY_BYTES + 1)
    resp = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert str(MAX_BODY_BYTES) in resp.json()["detail"]


def test_streamed_body_is_counted(client) -> None:
    """Without a Content-Length (chunked), the bytes are counted as they arrive."""
    chunk = b" " * (1024 * 1024)

    def too_much():
        for _ in range(MAX_BODY_BYTES // len(chunk) + 1):
            yield chunk

    resp = client.post("/predict", content=too_much(), headers={"content-type": "application/json"})
    assert resp.status_code == 413

    def one_case():
        yield json.dumps(CASE)[:10].encode()
        yield json.dumps(CASE)[10:].encode()

    resp = client.post("/predict", content=one_case(), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    assert resp.json()["predicted_hours"] == pytest.approx(math.expm1(4.0))


def test_openapi_declares_every_answer(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/predict/batch"):
        assert set(paths[path]["post"]["responses"]) == {"200", "400", "413", "422", "503"}
    for path in ("/health", "/model"):
        assert set(paths[path]["get"]["responses"]) == {"200", "503"}


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
        "interval_method": "80 % split conformal on log1p(hours) residuals, Mondrian by "
        "service_name (1 with their own quantiles, others global)",
        "calibration": {"source": "training", "reason": "not recalibrated online yet"},
        "backtest": None,
    }


def test_model_reports_the_backtest_figures(settings, service, tmp_path) -> None:
    fold = {"test_start": "2018-07-01", "test_end": "2019-01-01", "spent": True}
    fold |= {m: {"mae_log": 1.0} for m in ("model", "median", "hgb")}
    details = {"pooled": {"model": {"coverage": 0.8}}, "folds": [fold], "other": 1}
    results = tmp_path / "model_quality.json"
    results.write_text(json.dumps({"details": details}))
    local = settings.model_copy(update={"model_backtest_file": results})
    with TestClient(create_app(local, service)) as c:
        backtest = c.get("/model").json()["backtest"]
    assert backtest == {
        "pooled": {"model": {"coverage": 0.8}},
        "model_minus_hgb_mae_log": None,
        "folds": [fold],
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
