"""The prediction page against the real prediction API (sf311.serving.api) served on loopback."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from streamlit.testing.v1 import AppTest

from sf311.model.champion import LoadedModel, ModelService, mlflow_service
from sf311.model.registry import log_and_register
from tests.support.api_server import serve_api
from tests.support.models import fit_synthetic, paper_scorer

pytestmark = pytest.mark.integration
PAGE = Path(__file__).resolve().parents[3] / "dashboard" / "views" / "predict.py"


@pytest.fixture
def api_without_model(settings) -> Iterator[str]:
    """The API as it runs before any champion model exists."""
    with serve_api(settings, ModelService(), start_timeout=120) as url:
        yield url


@pytest.fixture
def api_with_paper_model(settings) -> Iterator[str]:
    """The API serving a two-split model: Graffiti -> 2.0, else hour <= 12 -> 3.0 else 4.0
    (log1p hours), interval +-1.0, version "7"."""
    scorer = paper_scorer(["Graffiti", "Parking Enforcement"], version="7")
    model = LoadedModel(scorer=scorer, version="7")
    with serve_api(settings, ModelService(model=model), start_timeout=120) as url:
        yield url


@pytest.fixture
def api_with_champion(spark, settings) -> Iterator[str]:
    """The API following the MLflow champion of a test-only model name, trained here."""
    from mlflow.tracking import MlflowClient

    local = settings.model_copy(
        update={"model_name": f"sf311-resolution-dashboard-test-{uuid.uuid4().hex[:8]}"}
    )
    result, cfg = fit_synthetic(spark, num_trees=5, max_depth=4)
    assert log_and_register(local, result, cfg).promoted
    try:
        with serve_api(local, mlflow_service(local), start_timeout=120) as url:
            assert requests.get(f"{url}/health", timeout=10).status_code == 200
            yield url
    finally:
        MlflowClient(local.mlflow_tracking_uri).delete_registered_model(local.model_name)


def _predict(monkeypatch, url: str, at_time: dt.time | None = None) -> AppTest:
    monkeypatch.setenv("SF311_API_URL", url)
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.selectbox(key="p_category").set_value("Tree Maintenance").run()
    if at_time is not None:
        at.time_input(key="p_time").set_value(at_time).run()
    at.button(key="p_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_predict_page_says_the_api_has_no_model(app_env, monkeypatch, api_without_model):
    at = _predict(monkeypatch, api_without_model)
    assert "prediction API is down" in at.error[0].value
    assert "not ready (503)" in at.error[0].value


@pytest.mark.parametrize(("at_time", "raw"), [(dt.time(9, 0), 3.0), (dt.time(13, 0), 4.0)])
def test_predict_page_shows_hours_interval_and_version(
    app_env, monkeypatch, api_with_paper_model, at_time, raw
):
    # Tree Maintenance is unseen by the model, so the hour of the form decides the leaf.
    at = _predict(monkeypatch, api_with_paper_model, at_time)
    assert not at.error
    assert at.metric[0].value == f"{math.expm1(raw):,.1f} h"
    interval = f"80% interval: {math.expm1(raw - 1):,.1f} h to {math.expm1(raw + 1):,.1f} h"
    assert interval in [m.value for m in at.markdown]
    assert "Model version: 7" in [c.value for c in at.caption]
    assert "service_name" in at.warning[0].value


def test_predict_page_shows_the_champion_prediction(app_env, monkeypatch, api_with_champion):
    at = _predict(monkeypatch, api_with_champion)
    assert not at.error
    hours = at.metric[0].value
    assert hours.endswith(" h") and float(hours[:-2].replace(",", "")) >= 0
    assert any("80% interval" in m.value for m in at.markdown)
    version = requests.get(f"{api_with_champion}/health", timeout=10).json()["model_version"]
    assert f"Model version: {version}" in [c.value for c in at.caption]
