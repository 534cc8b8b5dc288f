"""The prediction page against the real prediction API (sf311.api) served on loopback."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import uvicorn
from streamlit.testing.v1 import AppTest

from sf311.api import create_app
from sf311.model.export import flatten_trees
from sf311.model.scorer import Scorer
from sf311.model.service import LoadedModel, ModelService, mlflow_service
from sf311.settings import Settings

pytestmark = pytest.mark.integration
PAGE = Path(__file__).resolve().parents[3] / "dashboard" / "views" / "predict.py"


@contextlib.contextmanager
def _serve(settings: Settings, service: ModelService, port: int) -> Iterator[str]:
    app = create_app(settings, service=service)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the prediction API did not start")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def api_without_model(settings, free_port: Callable[[], int]) -> Iterator[str]:
    """The API as it runs before any champion model exists."""
    with _serve(settings, ModelService(), free_port()) as url:
        yield url


def _node(node_id, prediction, left=-1, right=-1, feature=-1, split=(), categories=-1) -> dict:
    return {
        "treeID": 0,
        "nodeData": {
            "id": node_id,
            "prediction": prediction,
            "leftChild": left,
            "rightChild": right,
            "split": {
                "featureIndex": feature,
                "leftCategoriesOrThreshold": list(split),
                "numCategories": categories,
            },
        },
    }


@pytest.fixture
def api_with_paper_model(settings, free_port: Callable[[], int]) -> Iterator[str]:
    """The API serving a two-split model: Graffiti -> 2.0, else hour <= 12 -> 3.0 else 4.0
    (log1p hours), interval +-1.0, version "7"."""
    nodes = [
        _node(0, 0.0, left=1, right=2, feature=0, split=[0.0], categories=3),
        _node(1, 2.0),
        _node(2, 0.0, left=3, right=4, feature=1, split=[12.0]),
        _node(3, 3.0),
        _node(4, 4.0),
    ]
    spec = {
        "categorical": ["service_name"],
        "numeric": ["hour"],
        "labels": {"service_name": ["Graffiti", "Parking Enforcement"]},
        "combine": "sum",
        "calibration": {
            "group_column": "service_name",
            "coverage": 0.8,
            "global": [-1.0, 0.0, 1.0],
            "groups": {},
        },
        "model_version": "7",
    }
    model = LoadedModel(scorer=Scorer(spec, flatten_trees(nodes, {0: 1.0})), version="7")
    with _serve(settings, ModelService(model=model), free_port()) as url:
        yield url


@pytest.fixture
def api_with_champion(settings, free_port: Callable[[], int]) -> Iterator[str]:
    """The API following the MLflow champion; skips when none is registered yet."""
    with _serve(settings, mlflow_service(settings), free_port()) as url:
        if requests.get(f"{url}/health", timeout=10).status_code != 200:
            pytest.skip(f"no champion of {settings.model_name} registered in MLflow yet")
        yield url


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
