"""Training, registration and the champion alias on the real MLflow server, then the API."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from sf311.model.champion import mlflow_service
from sf311.model.registry import ALIAS, log_and_register
from sf311.serving.api import create_app
from tests.support.models import fit_synthetic

pytestmark = pytest.mark.integration

CASE = {"requested_datetime": "2018-03-01T10:00:00-08:00", "service_name": "Category 3"}


@pytest.fixture(scope="module")
def trained(spark):
    good_result, good = fit_synthetic(spark, num_trees=10, max_depth=6)
    poor_result, poor = fit_synthetic(spark, num_trees=1, max_depth=1)
    return good_result, good, poor_result, poor


def test_alias_moves_only_for_a_better_model_and_the_api_follows_it(settings, trained) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    good_result, good, poor_result, poor = trained
    local = settings.model_copy(
        update={"model_name": f"sf311-resolution-test-{uuid.uuid4().hex[:8]}"}
    )
    first = log_and_register(local, good_result, good)
    assert first.promoted and first.champion_version is None

    second = log_and_register(local, poor_result, poor)
    assert not second.promoted
    assert second.champion_version == first.version
    assert second.champion_mae_log == pytest.approx(good_result.metrics["mae_log"], abs=1e-9)
    assert second.challenger_mae_log > second.champion_mae_log

    mlflow.set_tracking_uri(local.mlflow_tracking_uri)
    client = MlflowClient()
    assert client.get_model_version_by_alias(local.model_name, ALIAS).version == first.version
    # The subtype is no forest feature, but the levels stage reads it: the signature has it.
    logged = mlflow.models.get_model_info(f"models:/{local.model_name}/{first.version}")
    assert {"service_name", "service_subtype", "source"} <= set(
        logged.signature.inputs.input_names()
    )
    run = client.get_run(second.run_id)
    assert run.data.tags["champion_decision"] == "kept"
    assert {"champion_mae_log", "challenger_mae_log", "mae_log"} <= set(run.data.metrics)

    service = mlflow_service(local)
    with TestClient(create_app(local, service)) as api:
        assert api.get("/model").json()["version"] == first.version
        assert api.post("/predict", json=CASE).json()["model_version"] == first.version
        client.set_registered_model_alias(local.model_name, ALIAS, second.version)
        assert service.refresh()
        body = api.post("/predict", json=CASE).json()
        assert body["model_version"] == second.version
        assert body["lower_hours"] <= body["predicted_hours"] <= body["upper_hours"]
    client.delete_registered_model(local.model_name)
